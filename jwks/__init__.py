"""Verify Writ's Txn-Tokens and access tokens in a downstream service.

    from jwks import JwksClient, TxnTokenVerifier, require_prior_actor
    verifier = TxnTokenVerifier(JwksClient(issuer=ISSUER), issuer=ISSUER, audience=TRUST_DOMAIN)
    claims = verifier.verify(token)
    require_prior_actor(claims, "spiffe://dev.writ.local/agents/planner/**")

FastAPI glue lives in ``jwks.fastapi``; signing and key rotation in ``broker.signing``.
"""

from jwks.chain import (
    acted_earlier,
    check_act_agrees,
    nested_act,
    principal,
    require_current_actor,
    require_prior_actor,
)
from jwks.claims import (
    AT_JWT_TYP,
    TOKEN_TYPE_ACCESS_TOKEN,
    TOKEN_TYPE_JWT,
    TOKEN_TYPE_TXN_TOKEN,
    TXN_TOKEN_TYP,
    ActorHop,
    TxnTokenClaims,
)
from jwks.client import IntrospectionCheck, JwksClient, KeySource, StaticKeys
from jwks.errors import (
    BadSignature,
    ChainRequirementFailed,
    InvalidAudience,
    InvalidToken,
    InvalidTokenType,
    JwksError,
    JwksFetchError,
    MissingHeader,
    TokenExpired,
    TokenInactive,
    UnknownKeyId,
    UnsupportedAlgorithm,
)
from jwks.keys import SVID_ALGORITHMS, TOKEN_ALGORITHMS
from jwks.patterns import InvalidPattern, SpiffePattern, matches_any
from jwks.verifier import TxnTokenVerifier

__all__ = [
    "AT_JWT_TYP",
    "SVID_ALGORITHMS",
    "TOKEN_ALGORITHMS",
    "TOKEN_TYPE_ACCESS_TOKEN",
    "TOKEN_TYPE_JWT",
    "TOKEN_TYPE_TXN_TOKEN",
    "TXN_TOKEN_TYP",
    "ActorHop",
    "BadSignature",
    "ChainRequirementFailed",
    "IntrospectionCheck",
    "InvalidAudience",
    "InvalidPattern",
    "InvalidToken",
    "InvalidTokenType",
    "JwksClient",
    "JwksError",
    "JwksFetchError",
    "KeySource",
    "MissingHeader",
    "SpiffePattern",
    "StaticKeys",
    "TokenExpired",
    "TokenInactive",
    "TxnTokenClaims",
    "TxnTokenVerifier",
    "UnknownKeyId",
    "UnsupportedAlgorithm",
    "acted_earlier",
    "check_act_agrees",
    "matches_any",
    "nested_act",
    "principal",
    "require_current_actor",
    "require_prior_actor",
]
