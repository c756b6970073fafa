"""Verify a Txn-Token (or, with ``typ=AT_JWT_TYP``, an RFC 9068 access token) offline
against the issuer's JWKS, checking in a fixed order and naming the first failure.

Errors carry a ``code``; their messages never contain the token.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Collection
from typing import Any, Final

from joserfc import jws
from joserfc.errors import BadSignatureError, DecodeError, JoseError

from jwks.chain import check_act_agrees
from jwks.claims import TXN_TOKEN_TYP, TxnTokenClaims
from jwks.client import IntrospectionCheck, KeySource
from jwks.errors import (
    BadSignature,
    InvalidAudience,
    InvalidToken,
    InvalidTokenType,
    TokenExpired,
)
from jwks.jose import JoseRefused, TimeClaims, json_object
from jwks.keys import TOKEN_ALGORITHMS, check_algorithms

MAX_LEEWAY_S: Final = 300
#: The only JOSE header members Writ puts in a token; any other is refused.
ALLOWED_HEADER: Final = frozenset({"alg", "kid", "typ"})
#: Members each token type must carry (draft-ietf-oauth-transaction-tokens; RFC 9068 §2.2).
REQUIRED_CLAIMS: Final = {
    TXN_TOKEN_TYP: ("txn", "sub", "jti"),
}
DEFAULT_REQUIRED_CLAIMS: Final = ("sub", "jti")

_B64URL: Final = re.compile(r"[A-Za-z0-9_-]+")


def _malformed(why: str) -> InvalidToken:
    return InvalidToken(why, code="malformed")


def _json_object(segment: str, what: str) -> dict[str, Any]:
    # jwks.jose: strict UTF-8 JSON, no duplicate members (RFC 8725 §3.7, RFC 7515 §4)
    try:
        return json_object(segment, what)
    except JoseRefused as err:
        raise _malformed(str(err)) from err


#: the shared time checks' reasons, in this verifier's codes
_TIME_CODES: Final = {
    "missing_exp": "missing_claim",
    "missing_iat": "missing_claim",
    "invalid_exp": "invalid_claim",
    "invalid_iat": "invalid_claim",
    "invalid_nbf": "invalid_claim",
    "iat_in_future": "invalid_iat",
    "not_yet_valid": "not_yet_valid",
}


class TxnTokenVerifier:
    """Offline verifier of one issuer's tokens for one audience.

    ``verify`` checks, in order: size, compact form, header members, ``alg``, ``typ``,
    ``kid``, signature, ``exp``, ``iat`` (and ``nbf``), ``aud``, ``iss``, required members,
    member types, ``act``/``act_chain`` agreement, then the optional introspection.
    """

    def __init__(
        self,
        keys: KeySource,
        *,
        issuer: str | None,
        audience: str,
        algorithms: Collection[str] = TOKEN_ALGORITHMS,
        typ: str = TXN_TOKEN_TYP,
        leeway_s: int = 30,
        max_token_bytes: int = 16384,
        required_claims: Collection[str] | None = None,
        introspection: IntrospectionCheck | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(audience, str) or not audience:
            raise ValueError("audience must be a non-empty string")
        if issuer is not None and (not isinstance(issuer, str) or not issuer):
            raise ValueError("issuer must be a non-empty string or None")
        if not isinstance(typ, str) or not typ:
            raise ValueError("typ must be a non-empty string")
        if isinstance(leeway_s, bool) or not isinstance(leeway_s, int | float):
            raise ValueError("leeway_s must be a number")
        if not 0 <= leeway_s <= MAX_LEEWAY_S:
            raise ValueError(f"leeway_s must be between 0 and {MAX_LEEWAY_S}")
        if isinstance(max_token_bytes, bool) or not 256 <= max_token_bytes <= 1024 * 1024:
            raise ValueError("max_token_bytes must be between 256 and 1048576")
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._algorithms = check_algorithms(tuple(algorithms))
        self._typ = typ
        self._leeway = leeway_s
        self._max_bytes = max_token_bytes
        self._required = tuple(
            REQUIRED_CLAIMS.get(typ, DEFAULT_REQUIRED_CLAIMS)
            if required_claims is None
            else required_claims
        )
        self._introspection = introspection
        self._clock = clock

    def __repr__(self) -> str:
        return (
            f"TxnTokenVerifier(issuer={self._issuer!r}, audience={self._audience!r}, "
            f"typ={self._typ!r})"
        )

    def verify(self, token: str) -> TxnTokenClaims:
        """Return the claims of a valid token; raise an ``InvalidToken`` subclass (or
        ``JwksFetchError`` when keys or introspection are unavailable) otherwise."""
        if not isinstance(token, str):
            raise _malformed("token must be a string")
        if len(token) > self._max_bytes:
            raise InvalidToken(f"token exceeds {self._max_bytes} bytes", code="oversized")
        # RFC 7515 §7.1: BASE64URL(header) '.' BASE64URL(payload) '.' BASE64URL(signature)
        parts = token.split(".")
        # The signature may be empty (RFC 7519 §6), so "alg": "none" reaches the alg check.
        if len(parts) != 3 or not all(_B64URL.fullmatch(p) for p in parts[:2]) or (
            parts[2] and not _B64URL.fullmatch(parts[2])
        ):
            raise _malformed("not a JWS compact serialization")
        header = self._check_header(_json_object(parts[0], "header"))
        key = self._keys.get_key(header["kid"])
        try:
            jws.deserialize_compact(token, key, algorithms=[header["alg"]])
        except BadSignatureError as err:
            raise BadSignature("signature does not verify") from err
        except DecodeError as err:
            raise _malformed("undecodable JWS") from err
        except JoseError as err:
            raise BadSignature("the key does not fit the token's alg") from err
        claims = _json_object(parts[1], "payload")
        self._check_time(claims)
        self._check_audience(claims)
        # RFC 7519 §4.1.1: the issuer must be the one this verifier trusts.
        if self._issuer is not None and claims.get("iss") != self._issuer:
            raise InvalidToken("'iss' is not the expected issuer", code="invalid_iss")
        for member in self._required:
            if claims.get(member) is None:
                raise InvalidToken(f"claim {member!r} is required", code="missing_claim")
        verified = TxnTokenClaims.from_claims(claims)
        check_act_agrees(verified)
        if self._introspection is not None:
            self._introspection.check(token)
        return verified

    def _check_header(self, header: dict[str, Any]) -> dict[str, Any]:
        # RFC 7515 §4.1.11: "crit" names extensions we do not understand; refuse it and
        # every other member (jku, x5u, jwk, b64...) Writ never sets.
        if not ALLOWED_HEADER.issuperset(header):
            raise InvalidToken("header members other than alg, kid, typ", code="invalid_header")
        alg, kid, typ = header.get("alg"), header.get("kid"), header.get("typ")
        if not isinstance(alg, str):
            raise InvalidToken("header 'alg' is required", code="invalid_header")
        # RFC 8725 §3.1: only the algorithms named here; never none or HS*.
        if alg not in self._algorithms:
            raise InvalidToken("header 'alg' is not allowed", code="invalid_alg")
        # RFC 8725 §3.11 explicit typing; RFC 7515 §4.1.9 and RFC 9068 §4 also allow the
        # "application/" prefix.
        if typ not in (self._typ, f"application/{self._typ}"):
            raise InvalidTokenType(f"header 'typ' must be {self._typ!r}")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("header 'kid' is required", code="invalid_header")
        return header

    def _check_time(self, claims: dict[str, Any]) -> None:
        # RFC 7519 §4.1.4-4.1.6 through the shared checker; Writ issues whole seconds
        checks = TimeClaims(self._clock(), self._leeway, require_iat=True, integer_dates=True)
        try:
            checks.check(claims)
        except JoseRefused as err:
            if err.code == "expired":
                raise TokenExpired("token has expired") from err
            raise InvalidToken(str(err), code=_TIME_CODES.get(err.code, "invalid_claim")) from err

    def _check_audience(self, claims: dict[str, Any]) -> None:
        aud = claims.get("aud")
        if aud is None:
            raise InvalidToken("claim 'aud' is required", code="missing_claim")
        audiences = [aud] if isinstance(aud, str) else aud
        if not isinstance(audiences, list):
            raise InvalidToken("claim 'aud' must be a string or array", code="invalid_claim")
        # RFC 7519 §4.1.3: reject unless this audience is among the values.
        if self._audience not in audiences:
            raise InvalidAudience("'aud' does not name this audience")
