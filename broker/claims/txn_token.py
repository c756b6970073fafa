"""Claim building for Txn-Tokens: pure, no I/O, time passed in.

The signer adds the header; this module only decides the claims (draft-ietf-oauth-
transaction-tokens-10 §JWT Body Claims; RFC 8693 §4.1 for ``act``;
draft-araut-oauth-transaction-tokens-for-agents-02 for ``agentic_ctx``). A deployment picks
one of two token profiles (docs/token-format.md "Token profiles").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import quote


class TokenProfile(StrEnum):
    """Where the delegate of a replacement is named (``WRIT_TOKEN_PROFILE``)."""

    #: RFC 8693 §4.1 nesting, the delegate outermost in ``act``; ``act_chain`` lists the
    #: earlier actors oldest first (a Writ extension)
    writ = "writ"
    #: agents-02 §3.4.1: ``act`` never changes; the delegate is ``agentic_ctx.current_actor``
    agents_02 = "agents-02"


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
    # the parent's call chain of requesting workloads, oldest first (replacements)
    earlier_workloads: tuple[str, ...] = ()
    # the ``act`` claim, settled by ``first_act`` or ``replacement_act``; None: no act
    act: Mapping[str, Any] | None = None
    profile: TokenProfile = TokenProfile.writ


def nested_act(
    actor: str, earlier: tuple[Hop, ...], below: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """RFC 8693 §4.1: the current actor outermost, the least recent most deeply nested, and
    ``below`` (a user's own ``act``) unmodified beneath them all."""
    act: dict[str, Any] = {"sub": actor}
    inner = act
    for hop in reversed(earlier):
        inner["act"] = {"sub": hop.sub}
        inner = inner["act"]
    if below is not None:
        inner["act"] = dict(below)
    return act


def first_act(
    profile: TokenProfile, actor: str, subject: str, upstream: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """``act`` of a transaction's first token. ``upstream`` is the user access token's own
    ``act``, copied unmodified (agents-02 §3.7.1)."""
    if actor == subject and upstream is None:
        # agents-02 §3.2.2, RFC 8693 §4.1: the agent acts for itself; nothing was delegated
        return None
    if profile is TokenProfile.agents_02:
        return dict(upstream) if upstream is not None else {"sub": actor}
    return nested_act(actor, (), upstream)


def replacement_act(
    profile: TokenProfile,
    delegate: str,
    earlier: tuple[Hop, ...],
    parent_act: Mapping[str, Any] | None,
    parent_actor: str,
) -> dict[str, Any] | None:
    """``act`` of a replacement: the parent's unchanged (agents-02 §3.4.1), or the delegate
    with the parent's ``act`` nested inside (RFC 8693 §4.1)."""
    if profile is TokenProfile.agents_02:
        return None if parent_act is None else dict(parent_act)
    if parent_act is not None and parent_act.get("sub") == parent_actor:
        return {"sub": delegate, "act": dict(parent_act)}
    # the parent named its actor only in agentic_ctx (autonomous, or profile agents-02):
    # nest every actor; an immutable act that names none of them came from the user
    actors = {h.sub for h in earlier}
    below = None if parent_act is None or parent_act.get("sub") in actors else parent_act
    return nested_act(delegate, earlier, below)


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
        # draft-ietf-oauth-transaction-tokens-10 §Security Considerations ("Txn-Token as a
        # subject_token"), agents-02 §3.4.1: the call chain of requesters, comma-separated
        "req_wl": ",".join((*plan.earlier_workloads, plan.requesting_workload)),
        "tctx": dict(plan.tctx),
        "rctx": dict(plan.rctx),
        "agentic_ctx": {
            # agents-02 §3.6.1: REQUIRED; originator is set at first issuance, never changed
            "current_actor": plan.actor,
            "originator": path[0],
            "chain_metadata": {"hop_count": len(path), "txn_path": path},
            # agents-02 §3.6.2: deployment-specific extensions
            "prov": {"manifest_hash": plan.manifest_hash},
            "identity": {"workload_id": plan.actor},
        },
    }
    if plan.act is not None:
        claims["act"] = dict(plan.act)
    if plan.earlier_actors and plan.profile is TokenProfile.writ:
        # a Writ extension: no current draft defines act_chain; each hop's jti lets a
        # revocation of that token reach this one (docs/revocation.md)
        claims["act_chain"] = [{"sub": h.sub, "iat": h.iat, **({"jti": h.jti} if h.jti else {})}
                               for h in plan.earlier_actors]
    if plan.subject_id is not None:
        claims["sub_id"] = dict(plan.subject_id)
    return claims


def user_subject_id(issuer: str, subject: str) -> dict[str, str]:
    """RFC 9493 §3.2.4: the user as (issuer, subject), unique across issuers."""
    return {"format": "iss_sub", "iss": issuer, "sub": subject}


#: RFC 3986 §3.5 fragment characters left as they are; everything else, "#" and "%"
#: included, is percent-encoded
_FRAGMENT_SAFE = "!$&'()*+,;=:@/?"


def user_subject(issuer: str, subject: str) -> str:
    """A user's ``sub`` in a Writ token: the trusted issuer's URL with the issuer-local
    subject as its fragment, ``https://login.example.com#alice``.

    draft-ietf-oauth-transaction-tokens-10 §JWT Body Claims: ``sub`` MUST be unique within
    the trust domain. Distinct (issuer, subject) pairs give distinct values: the subject is
    percent-encoded, so it holds no "#", and the last "#" splits the two. An issuer is an
    https URL, so a user's ``sub`` never looks like an agent's SPIFFE ID.
    """
    return f"{issuer}#{quote(subject, safe=_FRAGMENT_SAFE)}"


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
    # the user access token's own ``act``, nested unmodified beneath the agent
    upstream_act: Mapping[str, Any] | None = None


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
        "act": nested_act(plan.actor, plan.earlier_actors, plan.upstream_act),
    }
    if plan.subject_id is not None:
        claims["sub_id"] = dict(plan.subject_id)
    return claims
