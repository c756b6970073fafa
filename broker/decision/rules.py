"""The decision gates of DESIGN §3, in order. Pure: they read the in-memory snapshot and
the parsed request, and raise an ``OAuthError`` whose ``reason`` is machine-readable."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from broker.decision.request import RequestContext, RequestDetails
from broker.errors import (
    AccessDenied,
    InvalidRequest,
    InvalidScope,
    InvalidTarget,
    UnauthorizedClient,
)
from registry.charter import SCOPE_TOKEN, Charter, ToolGrant
from registry.models import Status
from registry.namespace import within
from registry.snapshot import AgentView, GatewayView, RegistrySnapshot


def gateway_speaks_for(gateway: GatewayView, agent_id: str) -> None:
    """Gate 1: the gateway may speak for this agent's namespace (deny by default)."""
    if not within(agent_id, gateway.agent_namespaces):
        raise UnauthorizedClient(
            "the gateway may not speak for this agent", reason="gateway_namespace"
        )


def gateway_token_type(gateway: GatewayView, requested_token_type: str) -> None:
    # deny by default: a gateway gets only the token types it was registered for
    if requested_token_type not in gateway.token_types:
        raise UnauthorizedClient(
            "the gateway may not request this token type", reason="gateway_token_type"
        )


def enrolled_agent(snapshot: RegistrySnapshot, agent_id: str, now: float) -> AgentView:
    """Gate 3: enrolled, active, enrollment not expired."""
    agent = snapshot.agents.get(agent_id)
    if agent is None:
        raise AccessDenied("the agent is not enrolled", reason="agent_not_enrolled")
    if agent.status is not Status.active:
        raise AccessDenied("the agent is not active", reason=f"agent_{agent.status.value}")
    if agent.enrollment_expires_at is not None and now >= agent.enrollment_expires_at:
        raise AccessDenied("the agent's enrollment has expired", reason="enrollment_expired")
    return agent


def parse_scope(raw: str | None) -> frozenset[str] | None:
    """RFC 6749 §3.3: space-delimited scope tokens; absent means 'what the charter allows'."""
    if raw is None:
        return None
    tokens = raw.split(" ")
    if not raw or any(not SCOPE_TOKEN.match(t) for t in tokens):
        raise InvalidScope("scope is malformed", reason="scope_malformed")
    return frozenset(tokens)


def grant_scope(requested: frozenset[str] | None, allowed: frozenset[str]) -> tuple[str, ...]:
    """Scope never widens: every requested scope must be allowed; none requested = all."""
    if requested is None:
        requested = allowed
    extra = requested - allowed
    if extra:
        raise InvalidScope(
            "requested scope exceeds what the agent may receive", reason="scope_exceeds_charter"
        )
    if not requested:
        raise InvalidScope("no scope can be granted", reason="scope_empty")
    return tuple(sorted(requested))


def check_audience(audiences: tuple[str, ...], trust_domain: str) -> str:
    """A Txn-Token's audience is the trust domain: draft-ietf-oauth-transaction-tokens-10
    §Txn-Token Request, ``audience`` is REQUIRED and MUST be the trust domain name."""
    if not audiences:
        raise InvalidRequest("audience is required", reason="audience_missing")
    # RFC 8693 §2.1 allows several; a Txn-Token is valid in one trust domain only
    if any(a != trust_domain for a in audiences):
        raise InvalidTarget(
            "the requested audience is not this trust domain", reason="audience_refused"
        )
    return trust_domain


def required_scope(raw: str | None) -> frozenset[str]:
    """draft-ietf-oauth-transaction-tokens-10 §Txn-Token Request: ``scope`` is REQUIRED;
    a request without it is refused, never granted the charter's every scope."""
    if raw is None:
        raise InvalidRequest("scope is required", reason="scope_missing")
    scope = parse_scope(raw)
    assert scope is not None
    return scope


def _tool_grant(charter: Charter, tool: str) -> ToolGrant | None:
    return next((g for g in charter.tools if g.tool in (tool, "*")), None)


def check_charter_details(charter: Charter, details: RequestDetails) -> None:
    """Gate 5: tool, action and resource must fit one of the charter's tool grants."""
    if details.tool is None:
        if details.action is not None or details.resource is not None:
            raise AccessDenied("an action or resource needs a tool", reason="tool_missing")
        return
    grant = _tool_grant(charter, details.tool)
    if grant is None:
        raise AccessDenied("the charter does not allow this tool", reason="tool_not_in_charter")
    if details.action is not None and not ("*" in grant.actions or details.action in grant.actions):
        raise AccessDenied("the charter does not allow this action", reason="action_not_in_charter")
    if details.action is not None and details.action in charter.approval_required:
        raise AccessDenied("this action requires human approval", reason="approval_required")
    if details.resource is not None and not any(
        fnmatch.fnmatchcase(details.resource, p) for p in grant.resources
    ):
        raise AccessDenied(
            "the charter does not allow this resource", reason="resource_not_in_charter"
        )


def check_environment(charter: Charter, context: RequestContext) -> None:
    if charter.environments and context.environment not in charter.environments:
        raise AccessDenied(
            "the charter does not allow this environment", reason="environment_not_in_charter"
        )


@dataclass(frozen=True, slots=True)
class TtlBounds:
    default_s: int
    server_max_s: int


def token_ttl(requested_s: int | None, charter: Charter, bounds: TtlBounds) -> int:
    """TTL = min(request, charter, server max); the default when nothing is asked."""
    ask = requested_s if requested_s is not None else bounds.default_s
    return max(1, min(ask, charter.max_ttl_s, bounds.server_max_s))
