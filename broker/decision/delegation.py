"""Delegation rules (DESIGN §2, "Delegation rules"): what a replacement Txn-Token may carry
given the parent it replaces. Pure: no I/O; the parent's claims are already verified.

Every rule only narrows. The replacement keeps the parent's ``txn``, ``sub``, ``aud`` and
``tctx``; its scope is a subset of the parent's; its ``exp`` is never later than the
parent's; its actor is new to the chain, allowed by the delegator's charter, and the chain
stays within the hop limit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from broker.claims.txn_token import Hop, user_subject
from broker.decision.request import AuthorizationDetail, RequestContext, RequestDetails
from broker.errors import AccessDenied, InvalidRequest, InvalidScope
from jwks.claims import TxnTokenClaims
from jwks.patterns import matches_any
from registry.charter import Charter

DEFAULT_MAX_HOPS = 5


def thaw(value: Any) -> Any:
    """Plain JSON from the read-only view ``jwks`` gives of verified claims."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [thaw(v) for v in value]
    return value


def check_delegation(
    delegator: Charter, delegate_id: str, parent: TxnTokenClaims, *, max_hops: int
) -> int:
    """The delegator may hand the transaction to ``delegate_id``; returns the new hop count
    (actors including the delegate, as ``agentic_ctx.chain_metadata.hop_count`` counts)."""
    # DESIGN §2: the parent's charter must allow delegating to the delegate's SPIFFE ID
    if not delegator.delegate_to or not matches_any(delegate_id, delegator.delegate_to):
        raise AccessDenied(
            "the current actor's charter does not allow delegating to this agent",
            reason="delegation_not_allowed",
        )
    # DESIGN §2: an agent already in the chain cannot re-enter it
    if delegate_id in parent.actors or delegate_id == parent.subject:
        raise AccessDenied("the agent has already acted in this transaction",
                           reason="delegation_cycle")
    hops = len(parent.actors) + 1
    if hops > max_hops:
        raise AccessDenied("the delegation chain would exceed its hop limit",
                           reason="hop_limit_exceeded")
    return hops


def check_parent_scope(requested: frozenset[str] | None, parent: frozenset[str]) -> None:
    """Scope only narrows: a requested scope must lie inside the parent's."""
    if requested is not None and requested - parent:
        raise InvalidScope("requested scope exceeds the parent token's scope",
                           reason="scope_exceeds_parent")


def narrow_to_parent(granted: tuple[str, ...], parent: frozenset[str]) -> tuple[str, ...]:
    """What the delegate may get (charter ∩ bounds ∩ tool ∩ request), within the parent's."""
    scope = frozenset(granted) & parent
    if not scope:
        raise InvalidScope("no scope can be granted", reason="scope_empty")
    return tuple(sorted(scope))


def same_transaction_context(details: RequestDetails, tctx: Mapping[str, Any]) -> RequestDetails:
    """``tctx`` is immutable across replacements: a request may restate the parent's tool,
    action, resource and authorization_details, never change or add one. Returns the
    details of the transaction as the parent fixed them."""
    for member, reason in (
        ("tool", "tool_exceeds_parent"),
        ("action", "action_exceeds_parent"),
        ("resource", "resource_exceeds_parent"),
    ):
        asked = getattr(details, member)
        if asked is not None and asked != tctx.get(member):
            raise AccessDenied(f"the {member} differs from the parent token's", reason=reason)
    if details.authorization_details:
        asked_ad = [d.model_dump(exclude_none=True) for d in details.authorization_details]
        if asked_ad != thaw(tctx.get("authorization_details", [])):
            raise AccessDenied("authorization_details differ from the parent token's",
                               reason="authorization_details_exceed_parent")
    # the delegate's own charter, the tool and the approval rules judge these again
    return RequestDetails(
        tool=tctx.get("tool"),
        action=tctx.get("action"),
        resource=tctx.get("resource"),
        authorization_details=tuple(
            AuthorizationDetail.model_validate(d)
            for d in thaw(tctx.get("authorization_details", []))
        ),
        intent=details.intent,
        ttl_s=details.ttl_s,
    )


def replacement_environment(context: RequestContext, parent_rctx: Mapping[str, Any]) -> str | None:
    """The environment is the transaction's: a replacement keeps the parent's."""
    parent_env = parent_rctx.get("env")
    if parent_env is None:
        return context.environment
    if context.environment is not None and context.environment != parent_env:
        raise AccessDenied("the environment differs from the parent token's",
                           reason="environment_differs_from_parent")
    return str(parent_env)


def earlier_actors(parent: TxnTokenClaims) -> tuple[Hop, ...]:
    """RFC 8693 §4.1: the parent's earlier actors, oldest first, then the parent's actor
    with the time it was issued its token. A parent of profile agents-02 lists its earlier
    actors without times; each then gets the parent's ``iat``, when it had acted at the
    latest."""
    if parent.actor is None:
        raise InvalidRequest("the parent Txn-Token names no actor", reason="subject_token_no_act")
    hops = {h.sub: h for h in parent.actor_chain}

    def hop(sub: str) -> Hop:
        known = hops.get(sub)
        return Hop(sub, parent.issued_at, None) if known is None else Hop(sub, known.iat,
                                                                          known.jti)

    return (*(hop(sub) for sub in parent.actors[:-1]),
            Hop(parent.actor, parent.issued_at, parent.jti))


def replacement_expiry(now: int, ttl_s: int, parent_exp: int) -> int:
    """DESIGN §2: ``exp`` never outlives the parent."""
    return min(now + ttl_s, parent_exp)


def parent_subject_id(parent: TxnTokenClaims) -> dict[str, str] | None:
    """The parent's RFC 9493 ``sub_id``, carried over when it names the same subject."""
    sub_id = parent.raw.get("sub_id")
    if not isinstance(sub_id, Mapping):
        return None
    value = {k: v for k, v in sub_id.items() if isinstance(v, str)}
    if value.get("format") != "iss_sub" or "iss" not in value or "sub" not in value:
        return None
    # the parent's sub is built from the pair (or, minted before that, is its subject)
    if parent.subject not in (user_subject(value["iss"], value["sub"]), value["sub"]):
        return None
    return {"format": "iss_sub", "iss": value["iss"], "sub": value["sub"]}
