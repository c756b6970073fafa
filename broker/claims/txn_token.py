"""Claim building for Txn-Tokens: pure, no I/O, time passed in.

The signer adds the header; this module only decides the claims (draft-ietf-oauth-
transaction-tokens §4; RFC 8693 §4.1 for ``act``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Hop:
    """An earlier actor of the transaction."""

    sub: str
    iat: int
    # the jti of the token this actor held: a derived token names its ancestors, so
    # revoking one reaches its replacements (docs/revocation.md)
    jti: str | None = None


@dataclass(frozen=True, slots=True)
class TxnTokenPlan:
    """Everything the decision settled for one Txn-Token."""

    issuer: str
    audience: str
    subject: str
    scope: tuple[str, ...]
    requesting_workload: str
    actor: str
    txn: str
    jti: str
    issued_at: int
    expires_at: int
    earlier_actors: tuple[Hop, ...] = ()
    tctx: Mapping[str, Any] = field(default_factory=dict)
    rctx: Mapping[str, Any] = field(default_factory=dict)
    manifest_hash: str = ""
    # RFC 9493 §3.2.4 "iss_sub" identifier of a user principal (on-behalf-of profiles)
    subject_id: Mapping[str, str] | None = None


def nested_act(actor: str, earlier: tuple[Hop, ...]) -> dict[str, Any]:
    """RFC 8693 §4.1: the current actor outermost, the least recent most deeply nested."""
    act: dict[str, Any] = {"sub": actor}
    inner = act
    for hop in reversed(earlier):
        inner["act"] = {"sub": hop.sub}
        inner = inner["act"]
    return act


def build_txn_claims(plan: TxnTokenPlan) -> dict[str, Any]:
    path = [h.sub for h in plan.earlier_actors] + [plan.actor]
    claims: dict[str, Any] = {
        "iss": plan.issuer,
        "aud": plan.audience,
        "iat": plan.issued_at,
        "exp": plan.expires_at,
        "txn": plan.txn,
        "jti": plan.jti,
        "sub": plan.subject,
        "scope": " ".join(plan.scope),
        "req_wl": plan.requesting_workload,
        "act": nested_act(plan.actor, plan.earlier_actors),
        "tctx": dict(plan.tctx),
        "rctx": dict(plan.rctx),
        "agentic_ctx": {
            "prov": {"manifest_hash": plan.manifest_hash},
            "identity": {"workload_id": plan.actor},
            "chain_metadata": {"hop_count": len(path), "txn_path": path},
        },
    }
    if plan.earlier_actors:
        claims["act_chain"] = [{"sub": h.sub, "iat": h.iat, **({"jti": h.jti} if h.jti else {})}
                               for h in plan.earlier_actors]
    if plan.subject_id is not None:
        claims["sub_id"] = dict(plan.subject_id)
    return claims


def user_subject_id(issuer: str, subject: str) -> dict[str, str]:
    """RFC 9493 §3.2.4: the user as (issuer, subject), unique across issuers."""
    return {"format": "iss_sub", "iss": issuer, "sub": subject}


@dataclass(frozen=True, slots=True)
class AccessTokenPlan:
    """Everything the decision settled for one RFC 9068 access token for a tool."""

    issuer: str
    audience: str
    subject: str
    client_id: str
    scope: tuple[str, ...]
    actor: str
    jti: str
    issued_at: int
    expires_at: int
    earlier_actors: tuple[Hop, ...] = ()
    subject_id: Mapping[str, str] | None = None


def build_access_token_claims(plan: AccessTokenPlan) -> dict[str, Any]:
    """RFC 9068 §2.2 claims, with RFC 8693 §4.1 ``act`` naming the agent."""
    claims: dict[str, Any] = {
        "iss": plan.issuer,
        "exp": plan.expires_at,
        "aud": plan.audience,
        "sub": plan.subject,
        "client_id": plan.client_id,
        "iat": plan.issued_at,
        "jti": plan.jti,
        "scope": " ".join(plan.scope),
        "act": nested_act(plan.actor, plan.earlier_actors),
    }
    if plan.subject_id is not None:
        claims["sub_id"] = dict(plan.subject_id)
    return claims
