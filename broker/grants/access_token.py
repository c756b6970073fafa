"""Last step of the access-token profile: sign an RFC 9068 ``at+jwt``, describe its audit
record, build the RFC 8693 §2.2.1 response."""

from __future__ import annotations

from typing import Any

from broker.claims.txn_token import AccessTokenPlan, build_access_token_claims
from broker.grants.base import Issued, TokenContext
from broker.grants.mint import issued_event
from jwks.claims import AT_JWT_TYP, TOKEN_TYPE_ACCESS_TOKEN


def issue_access_token(
    ctx: TokenContext,
    plan: AccessTokenPlan,
    *,
    gateway: str,
    agent: str,
    tool: str,
    detail: dict[str, Any],
) -> Issued:
    # RFC 9068 §2.1: typ "at+jwt"
    token = ctx.signer.sign(build_access_token_claims(plan), typ=AT_JWT_TYP)
    scope = " ".join(plan.scope)
    event = issued_event(ctx, token, gateway=gateway, agent=agent, subject=plan.subject,
                         tool=tool, scope=scope, txn=None, jti=plan.jti,
                         expires_at=plan.expires_at, detail={**detail, "aud": plan.audience})
    response = {
        "access_token": token,
        "issued_token_type": TOKEN_TYPE_ACCESS_TOKEN,
        # RFC 8693 §2.2.1: an access token usable as an RFC 6750 bearer token
        "token_type": "Bearer",
        "expires_in": plan.expires_at - plan.issued_at,
        "scope": scope,
    }
    return Issued(response, event)
