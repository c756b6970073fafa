"""Profile "delegation / replacement" (DESIGN §2): subject_token = a Txn-Token Writ issued
(the parent), actor_token = the delegate agent's JWT-SVID.

Writ verifies the parent with its own published keys, in memory, asks the revocation set
about it, and mints a replacement: same ``txn``, ``sub``, ``aud`` and ``tctx``; ``req_wl``
grows by this request's gateway (draft-ietf-oauth-transaction-tokens-10 §Security
Considerations); ``agentic_ctx.current_actor`` = the delegate. In profile ``writ`` ``act`` =
the delegate with the parent's ``act`` nested inside (RFC 8693 §4.1) and ``act_chain`` grows
by the parent's actor; in profile ``agents-02`` ``act`` is the parent's, unchanged. The
delegate goes through the same ordered gates as any agent (``broker/decision/gates.py``) with
the delegation rules (``broker/decision/delegation.py``) before the bounds and the parent's
scope and lifetime as the last word. Nothing the client sends becomes ``act``, ``act_chain``
or ``agentic_ctx``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from broker.auth.clients import AuthenticatedClient
from broker.auth.own_tokens import OwnTxnTokens
from broker.auth.svid import token_fingerprint
from broker.claims.txn_token import TxnTokenPlan, replacement_act
from broker.decision.chain_status import chain_gate
from broker.decision.delegation import (
    DEFAULT_MAX_HOPS,
    check_delegation,
    check_parent_scope,
    earlier_actors,
    narrow_to_parent,
    parent_subject_id,
    replacement_environment,
    replacement_expiry,
    same_transaction_context,
    thaw,
)
from broker.decision.gates import AGENT_GATES, Decision, Gate, walk
from broker.decision.rules import enrolled_agent
from broker.decision.user_binding import replacement_tenancy_gate
from broker.errors import AccessDenied, InvalidRequest, OAuthError
from broker.grants.actor import actor_svid
from broker.grants.autonomous import token_decision
from broker.grants.base import Issued, TokenContext
from broker.grants.mint import issue_txn_token
from jwks.claims import TOKEN_TYPE_TXN_TOKEN, TxnTokenClaims
from jwks.errors import InvalidToken

#: Asked of every parent before it is replaced; the broker wires its revocation set here.
IsRevoked = Callable[[TxnTokenClaims], bool]


def never_revoked(claims: TxnTokenClaims) -> bool:
    return False


def delegation_gate(parent: TxnTokenClaims, max_hops: int) -> Gate:
    """DESIGN §2 delegation rules, before the bounds: the delegator may hand over to this
    agent, the chain stays acyclic and short, and the request restates the parent's
    transaction (tool, action, resource, environment) and asks no wider scope."""

    def gate(d: Decision) -> str:
        assert d.agent_id is not None and parent.actor is not None
        try:
            # the current actor of the parent; its charter decides who may come next
            delegator = enrolled_agent(d.snapshot, parent.actor, d.now)
        except OAuthError as err:
            raise AccessDenied("the delegating agent may no longer act",
                               reason=f"delegator_{err.reason}") from err
        hops = check_delegation(delegator.charter, d.agent_id, parent, max_hops=max_hops)
        check_parent_scope(d.requested_scope, parent.scope)
        d.details = same_transaction_context(d.details, parent.tctx)
        d.notes["tool"] = d.details.tool
        d.context = d.context.model_copy(
            update={"environment": replacement_environment(d.context, parent.rctx)})
        d.earlier_actors = tuple(hop.sub for hop in earlier_actors(parent))
        return f"{parent.actor} may delegate to {d.agent_id}; hop {hops} of at most {max_hops}"

    return ("delegation", gate)


def parent_gate(parent: TxnTokenClaims) -> Gate:
    """Last: never more scope than the parent had."""

    def gate(d: Decision) -> str:
        d.scope = narrow_to_parent(d.scope, parent.scope)
        return f"within the parent's scope: {' '.join(d.scope)}"

    return ("parent", gate)


def _gates(parent: TxnTokenClaims, max_hops: int) -> tuple[Gate, ...]:
    out: list[Gate] = []
    for gate in AGENT_GATES:
        if gate[0] == "bounds":
            out.append(chain_gate(parent))  # the kill switch reaches the whole chain
            out.append(replacement_tenancy_gate(parent))  # the delegate may act for the user
            out.append(delegation_gate(parent, max_hops))
        out.append(gate)
    return (*out, parent_gate(parent))


class ReplacementProfile:
    requested_token_types: tuple[str, ...] = (TOKEN_TYPE_TXN_TOKEN,)

    def __init__(
        self,
        parents: OwnTxnTokens,
        *,
        max_hops: int = DEFAULT_MAX_HOPS,
        is_revoked: IsRevoked = never_revoked,
    ) -> None:
        self._parents = parents
        self._max_hops = max_hops
        self._is_revoked = is_revoked

    def issue(
        self,
        params: dict[str, str],
        client: AuthenticatedClient,
        ctx: TokenContext,
        requested_token_type: str,
    ) -> Issued:
        delegate_id = actor_svid(params, ctx).spiffe_id
        parent = self._parent(params["subject_token"], ctx)
        d = replace(token_decision(params, client, ctx, requested_token_type),
                    validate_subject=None, agent_id=delegate_id)
        d = walk(d, _gates(parent, self._max_hops))
        assert d.agent is not None and parent.txn is not None and parent.actor is not None
        gateway = client.gateway.client_id
        now = int(ctx.now)
        rctx = {"req_ip": d.context.client_ip, "gateway_ip": ctx.peer_ip,
                "gateway_ip_source": ctx.peer_ip_source, "env": d.context.environment}
        earlier = earlier_actors(parent)
        plan = TxnTokenPlan(
            issuer=ctx.issuer,
            audience=d.audience,
            subject=parent.subject,
            scope=d.scope,
            requesting_workload=gateway,
            actor=delegate_id,
            txn=parent.txn,
            jti=ctx.new_id(),
            issued_at=now,
            expires_at=replacement_expiry(now, d.ttl_s, parent.expires_at),
            earlier_actors=earlier,
            # draft-ietf-oauth-transaction-tokens: tctx is immutable for the transaction
            tctx=thaw(parent.tctx),
            rctx={k: v for k, v in rctx.items() if v is not None},
            manifest_hash=d.agent.charter_hash,
            subject_id=parent_subject_id(parent),
            # draft-ietf-oauth-transaction-tokens-10: keep the call chain of requesters
            earlier_workloads=parent.requesting_workloads,
            act=replacement_act(ctx.profile, delegate_id, earlier, thaw(parent.raw.get("act")),
                                parent.actor),
            profile=ctx.profile,
        )
        issued = issue_txn_token(
            ctx,
            plan,
            gateway=gateway,
            agent=delegate_id,
            tool=d.details.tool,
            detail={
                "profile": "replacement",
                "intent": d.details.intent,
                "charter_version": d.agent.charter_version,
                "parent_jti": parent.jti,
                "delegator": parent.actor,
                "hop_count": len(plan.earlier_actors) + 1,
                "actor_token_sha256": ctx.notes.get("actor_token_sha256"),
                "subject_token_sha256": ctx.notes.get("subject_token_sha256"),
            },
        )
        if d.tool is not None:
            # extension member (docs/tools.md): where the gateway sends the agent's call
            issued.response["tool_endpoint"] = d.tool.endpoint
        return issued

    def _parent(self, token: str, ctx: TokenContext) -> TxnTokenClaims:
        ctx.notes["subject_token_sha256"] = token_fingerprint(token)
        try:
            parent = self._parents.verify(token)
        except InvalidToken as err:
            # RFC 8693 §2.2.2: an invalid subject_token is invalid_request; a parent not
            # signed by Writ, tampered with or expired is invalid
            raise InvalidRequest(
                "subject_token is not a valid Txn-Token from this issuer",
                reason=f"subject_token_{err.code}",
            ) from err
        ctx.notes["subject"] = parent.subject
        if parent.txn is None:
            raise InvalidRequest("the parent Txn-Token has no txn", reason="subject_token_no_txn")
        if parent.actor is None:
            raise InvalidRequest("the parent Txn-Token names no actor",
                                 reason="subject_token_no_act")
        if self._is_revoked(parent):
            raise InvalidRequest(
                "the parent Txn-Token has been revoked", reason="subject_token_revoked"
            )
        return parent
