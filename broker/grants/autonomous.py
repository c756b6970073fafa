"""Profile "autonomous agent" (DESIGN §2): subject_token = the agent's JWT-SVID, no actor.
Result: a Txn-Token whose ``sub`` and ``act.sub`` are the agent."""

from __future__ import annotations

from broker.claims import TxnTokenPlan
from broker.client_auth import AuthenticatedClient
from broker.decision import (
    check_audience,
    check_charter_details,
    check_environment,
    enrolled_agent,
    gateway_speaks_for,
    grant_scope,
    parse_scope,
    token_ttl,
)
from broker.errors import InvalidRequest, InvalidTarget
from broker.grants.base import Issued, TokenContext
from broker.grants.mint import issue_txn_token
from broker.request import (
    RequestContext,
    RequestDetails,
    parse_json_object,
    parse_model,
)
from broker.svid import SvidError


class AutonomousAgentProfile:
    def issue(
        self,
        params: dict[str, str],
        client: AuthenticatedClient,
        ctx: TokenContext,
        requested_token_type: str,
    ) -> Issued:
        gateway = client.gateway.client_id
        try:
            svid = ctx.svids.validate(params["subject_token"], (ctx.issuer,))
        except SvidError as err:
            # RFC 8693 §2.2.2: an invalid subject_token is invalid_request
            raise InvalidRequest(
                "subject_token is not a valid JWT-SVID", reason=f"subject_token_{err.reason}"
            ) from err
        agent_id = svid.spiffe_id
        ctx.notes["agent"] = agent_id
        ctx.notes["subject_token_sha256"] = svid.fingerprint
        gateway_speaks_for(client.gateway, agent_id)
        agent = enrolled_agent(ctx.snapshot, agent_id, ctx.now)
        audience = check_audience(params.get("audience"), ctx.trust_domain)
        if "resource" in params:
            raise InvalidTarget(
                "a Txn-Token is not issued for a resource", reason="resource_refused"
            )
        scope = grant_scope(parse_scope(params.get("scope")), frozenset(agent.charter.scopes))
        details: RequestDetails = parse_model(
            RequestDetails,
            parse_json_object(
                params.get("request_details"), "request_details", max_depth=ctx.max_json_depth
            ),
            "request_details",
        )
        context: RequestContext = parse_model(
            RequestContext,
            parse_json_object(
                params.get("request_context"), "request_context", max_depth=ctx.max_json_depth
            ),
            "request_context",
        )
        ctx.notes["tool"] = details.tool
        ctx.notes["intent"] = details.intent
        check_charter_details(agent.charter, details)
        check_environment(agent.charter, context)
        ttl = token_ttl(details.ttl_s, agent.charter, ctx.ttl)
        now = int(ctx.now)
        tctx = {
            "purpose": agent.charter.purpose or None,
            "tool": details.tool,
            "action": details.action,
            "resource": details.resource,
            "authorization_details": [
                d.model_dump(exclude_none=True) for d in details.authorization_details
            ]
            or None,
        }
        rctx = {"req_ip": context.client_ip, "gateway_ip": ctx.peer_ip, "env": context.environment}
        plan = TxnTokenPlan(
            issuer=ctx.issuer,
            audience=audience,
            subject=agent_id,
            scope=scope,
            requesting_workload=gateway,
            actor=agent_id,
            txn=ctx.new_id(),
            jti=ctx.new_id(),
            issued_at=now,
            expires_at=now + ttl,
            tctx={k: v for k, v in tctx.items() if v is not None},
            rctx={k: v for k, v in rctx.items() if v is not None},
            manifest_hash=agent.charter_hash,
        )
        return issue_txn_token(
            ctx,
            plan,
            gateway=gateway,
            agent=agent_id,
            tool=details.tool,
            detail={
                "profile": "autonomous",
                "intent": details.intent,
                "charter_version": agent.charter_version,
            },
        )
