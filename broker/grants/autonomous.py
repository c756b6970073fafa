"""Profile "autonomous agent" (DESIGN §2): subject_token = the agent's JWT-SVID, no actor.
Result: a Txn-Token whose ``sub`` and ``agentic_ctx.current_actor`` are the agent, with no
``act`` (agents-02 §3.2.2: nothing was delegated)."""

from __future__ import annotations

from broker.auth.clients import AuthenticatedClient
from broker.claims.txn_token import TxnTokenPlan, first_act
from broker.decision.gates import AGENT_GATES, Decision, txn_context, walk
from broker.grants.base import Issued, TokenContext
from broker.grants.mint import issue_txn_token
from jwks.claims import TOKEN_TYPE_TXN_TOKEN


def token_decision(
    params: dict[str, str], client: AuthenticatedClient, ctx: TokenContext, requested: str
) -> Decision:
    """The ``Decision`` of one token request, over the broker's in-memory state."""
    return Decision(
        snapshot=ctx.snapshot,
        now=ctx.now,
        trust_domain=ctx.trust_domain,
        ttl_bounds=ctx.ttl,
        max_json_depth=ctx.max_json_depth,
        params=params,
        requested_token_type=requested,
        gateway_id=client.gateway.client_id,
        gateway=client.gateway,
        validate_subject=lambda token: ctx.svids.validate(token, (ctx.issuer,)),
        notes=ctx.notes,
    )


class AutonomousAgentProfile:
    requested_token_types: tuple[str, ...] = (TOKEN_TYPE_TXN_TOKEN,)

    def issue(
        self,
        params: dict[str, str],
        client: AuthenticatedClient,
        ctx: TokenContext,
        requested_token_type: str,
    ) -> Issued:
        # DESIGN §3: the same ordered gates POST /v1/decisions/explain walks
        d = walk(token_decision(params, client, ctx, requested_token_type), AGENT_GATES)
        assert d.agent is not None and d.agent_id is not None
        context = d.context
        now = int(ctx.now)
        rctx = {"req_ip": context.client_ip, "gateway_ip": ctx.peer_ip,
                "gateway_ip_source": ctx.peer_ip_source, "env": context.environment}
        plan = TxnTokenPlan(
            issuer=ctx.issuer,
            audience=d.audience,
            subject=d.agent_id,
            scope=d.scope,
            requesting_workload=client.gateway.client_id,
            actor=d.agent_id,
            txn=ctx.new_id(),
            jti=ctx.new_id(),
            issued_at=now,
            expires_at=now + d.ttl_s,
            tctx=txn_context(d),
            rctx={k: v for k, v in rctx.items() if v is not None},
            manifest_hash=d.agent.charter_hash,
            act=first_act(ctx.profile, d.agent_id, d.agent_id, None),
            profile=ctx.profile,
        )
        issued = issue_txn_token(
            ctx,
            plan,
            gateway=client.gateway.client_id,
            agent=d.agent_id,
            tool=d.details.tool,
            detail={
                "profile": "autonomous",
                "intent": d.details.intent,
                "charter_version": d.agent.charter_version,
            },
        )
        if d.tool is not None:
            # extension member (docs/tools.md): where the gateway sends the agent's call
            issued.response["tool_endpoint"] = d.tool.endpoint
        return issued
