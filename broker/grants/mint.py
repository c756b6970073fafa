"""Shared last step of every Txn-Token profile: sign, describe the audit record, build the
RFC 8693 §2.2.1 response."""

from __future__ import annotations

from typing import Any

from broker.audit.writer import AuditEvent
from broker.auth.svid import token_fingerprint
from broker.claims.txn_token import TxnTokenPlan, build_txn_claims
from broker.grants.base import Issued, TokenContext
from jwks.claims import TOKEN_TYPE_TXN_TOKEN, TXN_TOKEN_TYP


def issued_event(
    ctx: TokenContext,
    token: str,
    *,
    gateway: str,
    agent: str,
    subject: str,
    tool: str | None,
    scope: str,
    txn: str | None,
    jti: str,
    expires_at: int,
    detail: dict[str, Any],
) -> AuditEvent:
    """The audit record of an issued token: its fingerprint and signing key, never the token
    (DESIGN §6)."""
    return AuditEvent(
        kind="token", decision="issued", reason="ok", gateway=gateway, agent=agent,
        subject=subject, tool=tool, scope=scope, txn=txn, jti=jti,
        detail={**detail, "token_sha256": token_fingerprint(token), "kid": ctx.signer.kid,
                "exp": expires_at},
    )


def issue_txn_token(
    ctx: TokenContext,
    plan: TxnTokenPlan,
    *,
    gateway: str,
    agent: str,
    tool: str | None,
    detail: dict[str, Any],
) -> Issued:
    token = ctx.signer.sign(build_txn_claims(plan), typ=TXN_TOKEN_TYP)
    scope = " ".join(plan.scope)
    event = issued_event(ctx, token, gateway=gateway, agent=agent, subject=plan.subject,
                         tool=tool, scope=scope, txn=plan.txn, jti=plan.jti,
                         expires_at=plan.expires_at, detail=detail)
    response = {
        "access_token": token,
        "issued_token_type": TOKEN_TYPE_TXN_TOKEN,
        # RFC 8693 §2.2.1: N_A when the token is not an OAuth access token
        "token_type": "N_A",
        "expires_in": plan.expires_at - plan.issued_at,
        "scope": scope,
    }
    return Issued(response, event)
