"""The decision of DESIGN §3 as one ordered list of gates.

``POST /token`` (autonomous agent profile) and ``POST /v1/decisions/explain`` walk the same
list, ``AGENT_GATES``, over the same ``Decision``, so the explanation of a request and its
outcome cannot disagree. Each gate reads the in-memory snapshot and what earlier gates
settled, raises an ``OAuthError`` whose ``reason`` is machine-readable, or returns a short
sentence saying why it let the request through. No gate does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from broker.auth.svid import SvidError, ValidatedSvid
from broker.decision.request import (
    RequestContext,
    RequestDetails,
    parse_json_object,
    parse_model,
    values_of,
)
from broker.decision.rules import (
    TtlBounds,
    check_audience,
    check_charter_details,
    check_environment,
    enrolled_agent,
    gateway_speaks_for,
    gateway_token_type,
    grant_scope,
    required_scope,
    token_ttl,
)
from broker.errors import (
    AccessDenied,
    InvalidAuthorizationDetails,
    InvalidClient,
    InvalidRequest,
    InvalidScope,
    InvalidTarget,
    TemporarilyUnavailable,
)
from registry.bounds import BoundRefusal, BoundView, check_bounds, narrow_scopes
from registry.charter import Charter, ToolGrant
from registry.models import Status
from registry.snapshot import AgentView, GatewayView, RegistrySnapshot
from registry.tools import ToolView, unmet_chain_requirements

SubjectValidator = Callable[[str], ValidatedSvid]


@dataclass
class Decision:
    """One request on its way through the gates: its inputs, then what each gate settled."""

    snapshot: RegistrySnapshot
    now: float
    trust_domain: str
    ttl_bounds: TtlBounds
    max_json_depth: int
    params: Mapping[str, str]
    requested_token_type: str
    gateway_id: str | None
    gateway: GatewayView | None
    # validates the subject_token (a JWT-SVID); None when the agent is named directly
    validate_subject: SubjectValidator | None = None
    agent_id: str | None = None
    # SPIFFE IDs that acted before the requesting gateway, oldest first (none yet for an
    # autonomous agent; delegation adds them)
    earlier_actors: tuple[str, ...] = ()
    notes: MutableMapping[str, Any] = field(default_factory=dict)
    # settled by the gates
    audience: str = ""
    requested_scope: frozenset[str] | None = None
    details: RequestDetails = field(default_factory=RequestDetails)
    context: RequestContext = field(default_factory=RequestContext)
    svid: ValidatedSvid | None = None
    agent: AgentView | None = None
    bounds: tuple[BoundView, ...] = ()
    charter_scope: frozenset[str] = frozenset()
    tool: ToolView | None = None
    authorization_details: tuple[dict[str, Any], ...] = ()
    scope: tuple[str, ...] = ()
    ttl_s: int = 0

    @property
    def chain(self) -> tuple[str, ...]:
        """Who acted before the current agent: earlier actors, then the gateway."""
        return (*self.earlier_actors, *((self.gateway_id,) if self.gateway_id else ()))

    @property
    def charter(self) -> Charter:
        assert self.agent is not None, "the enrollment gate runs before this"
        return self.agent.charter


Gate = tuple[str, Callable[[Decision], str]]


@dataclass(frozen=True, slots=True)
class GateOutcome:
    gate: str
    result: str  # allowed | refused | not_reached
    detail: str = ""
    error: str | None = None
    reason: str | None = None


def _json_param(d: Decision, name: str) -> dict[str, Any]:
    return parse_json_object(d.params.get(name), name, max_depth=d.max_json_depth)


# --- the gates, in order ---------------------------------------------------------------------


def request_gate(d: Decision) -> str:
    """The request's own members: audience, resource, scope, request_details/context."""
    d.audience = check_audience(values_of(d.params, "audience"), d.trust_domain)
    if "resource" in d.params:
        raise InvalidTarget("a Txn-Token is not issued for a resource", reason="resource_refused")
    d.requested_scope = required_scope(d.params.get("scope"))
    d.details = parse_model(RequestDetails, _json_param(d, "request_details"), "request_details")
    d.notes["tool"] = d.details.tool
    d.notes["intent"] = d.details.intent
    d.context = parse_model(RequestContext, _json_param(d, "request_context"),
                            "request_context")
    asked = " ".join(sorted(d.requested_scope))
    tool = f"tool {d.details.tool}, action {d.details.action}" if d.details.tool else "no tool"
    return f"audience {d.audience}; scope asked: {asked}; {tool}"


def subject_gate(d: Decision) -> str:
    """DESIGN §3 step 2: the agent's JWT-SVID."""
    token = d.params.get("subject_token")
    if token is None or d.validate_subject is None:
        if d.agent_id is None:
            raise InvalidRequest("subject_token is required", reason="subject_token_missing")
        return f"agent {d.agent_id} named directly; no JWT-SVID checked"
    try:
        svid = d.validate_subject(token)
    except SvidError as err:
        # RFC 8693 §2.2.2: an invalid subject_token is invalid_request
        raise InvalidRequest(
            "subject_token is not a valid JWT-SVID", reason=f"subject_token_{err.reason}"
        ) from err
    if d.agent_id is not None and d.agent_id != svid.spiffe_id:
        raise InvalidRequest("the subject_token names another agent",
                             reason="subject_token_other_agent")
    d.svid, d.agent_id = svid, svid.spiffe_id
    d.notes["agent"] = svid.spiffe_id
    d.notes["subject_token_sha256"] = svid.fingerprint
    return f"JWT-SVID of {svid.spiffe_id} is valid"


def gateway_gate(d: Decision) -> str:
    """DESIGN §3 step 1: a registered, active gateway that may speak for this agent."""
    assert d.agent_id is not None
    gateway = d.gateway
    if gateway is None:
        raise InvalidClient("client authentication failed", reason="unknown_gateway")
    if gateway.status is not Status.active:
        raise InvalidClient("client authentication failed",
                            reason=f"gateway_{gateway.status.value}")
    gateway_token_type(gateway, d.requested_token_type)
    gateway_speaks_for(gateway, d.agent_id)
    return f"gateway {gateway.client_id} may speak for {d.agent_id}"


def enrollment_gate(d: Decision) -> str:
    """DESIGN §3 step 3."""
    assert d.agent_id is not None
    d.agent = enrolled_agent(d.snapshot, d.agent_id, d.now)
    return f"enrolled and active; charter version {d.agent.charter_version}"


def bounds_gate(d: Decision) -> str:
    """DESIGN §3 step 4, before the charter is read: the agent's SPIFFE ID decides the
    tool tags, scopes and risk it may ever get. A tool not in the registry is left to the
    tool gate."""
    assert d.agent_id is not None
    tool = d.snapshot.tools.get(d.details.tool) if d.details.tool is not None else None
    try:
        d.bounds = check_bounds(d.snapshot.bounds, d.agent_id, scopes=d.requested_scope,
                                tool=tool, action=d.details.action)
    except BoundRefusal as err:
        if err.reason == "scope_outside_bounds":
            raise InvalidScope(str(err), reason=err.reason) from err
        raise AccessDenied(str(err), reason=err.reason) from err
    return "within " + ", ".join(b.pattern for b in d.bounds)


def _tool_grant(charter: Charter, tool: str) -> ToolGrant | None:
    return next((g for g in charter.tools if g.tool in (tool, "*")), None)


def charter_gate(d: Decision) -> str:
    """DESIGN §3 step 5: scope, tool, action, resource, environment; the actions the
    charter reserves for approval."""
    charter = d.charter
    d.charter_scope = frozenset(grant_scope(d.requested_scope, frozenset(charter.scopes)))
    check_charter_details(charter, d.details)
    check_environment(charter, d.context)
    if d.details.tool is None:
        return "scope within the charter; no tool named"
    grant = _tool_grant(charter, d.details.tool)
    assert grant is not None
    for detail in d.details.authorization_details:
        for action in detail.actions or ():
            if not ("*" in grant.actions or action in grant.actions):
                raise AccessDenied("the charter does not allow this action",
                                   reason="action_not_in_charter")
    return f"the charter allows {d.details.tool} for action {d.details.action}"


def tool_gate(d: Decision) -> str:
    """DESIGN §3 step 6: the tool resolved in the registry (from the snapshot), fresh,
    declaring the action; scope and authorization_details within what it declares; its
    call-chain requirements met."""
    details = d.details
    if details.tool is None:
        if details.authorization_details:
            raise InvalidAuthorizationDetails("authorization_details need a tool",
                                              reason="authorization_details_without_tool")
        return "no tool named"
    tool = d.snapshot.tools.get(details.tool)
    if tool is None:
        raise AccessDenied("the tool is not registered", reason="tool_not_registered")
    if not tool.usable(d.now):
        # fail closed: the last good metadata is too old and could not be refreshed
        raise TemporarilyUnavailable("the tool's metadata is unavailable; try again later",
                                     reason="tool_metadata_stale")
    if details.action is None:
        raise InvalidRequest("a request for a tool must name the action",
                             reason="action_missing")
    if details.action not in tool.actions:
        raise AccessDenied("the tool does not declare this action", reason="action_not_declared")
    if d.requested_scope is not None and not d.requested_scope <= frozenset(tool.scopes):
        raise InvalidScope("requested scope exceeds what the tool accepts",
                           reason="scope_exceeds_tool")
    d.authorization_details = tuple(_granted_detail(tool, detail.model_dump(exclude_none=True))
                                    for detail in details.authorization_details)
    unmet = unmet_chain_requirements(tool.requires_chain, d.chain)
    if unmet:
        raise AccessDenied("the tool's call-chain requirements are not met",
                           reason="chain_requirement_unmet")
    d.tool = tool
    chain = f"; call chain meets {', '.join(tool.requires_chain)}" if tool.requires_chain else ""
    return f"{tool.name} declares {details.action} ({tool.actions[details.action].risk}){chain}"


def _granted_detail(tool: ToolView, detail: dict[str, Any]) -> dict[str, Any]:
    """RFC 9396 §2: a detail is granted only as far as the tool declares it."""
    if detail["type"] not in tool.authorization_details_types:
        raise InvalidAuthorizationDetails("the tool does not accept this authorization_details "
                                          "type", reason="authorization_details_type")
    if any(a not in tool.actions for a in detail.get("actions", ())):
        raise InvalidAuthorizationDetails("authorization_details name an action the tool does "
                                          "not declare", reason="authorization_details_action")
    # RFC 9396 §2.2: locations are the resource servers; only the tool's own
    if any(loc not in (tool.audience, tool.endpoint) for loc in detail.get("locations", ())):
        raise InvalidAuthorizationDetails("authorization_details name a location other than "
                                          "the tool", reason="authorization_details_location")
    return detail


def approval_gate(d: Decision) -> str:
    """DESIGN §3 step 7: an action the tool or the charter reserves for a human approval
    is refused until the approval flow exists."""
    actions = {a for a in (d.details.action,) if a is not None}
    for detail in d.authorization_details:
        actions.update(detail.get("actions", ()))
    reserved = set(d.charter.approval_required)
    if d.tool is not None:
        reserved |= {a for a, spec in d.tool.actions.items() if spec.approval_required}
    if actions & reserved:
        raise AccessDenied("this action requires human approval", reason="approval_required")
    return "no approval needed"


def grant_gate(d: Decision) -> str:
    """What enters the token: scope = charter ∩ bounds ∩ tool, and TTL = min(request,
    charter, tool, server maximum)."""
    scope = narrow_scopes(d.charter_scope, d.bounds)
    if d.tool is not None:
        scope &= frozenset(d.tool.scopes)
    if not scope:
        raise InvalidScope("no scope can be granted", reason="scope_empty")
    d.scope = tuple(sorted(scope))
    ttl = token_ttl(d.details.ttl_s, d.charter, d.ttl_bounds)
    d.ttl_s = min(ttl, d.tool.max_ttl_s) if d.tool is not None else ttl
    return f"scope {' '.join(d.scope)}; expires in {d.ttl_s} s"


AGENT_GATES: tuple[Gate, ...] = (
    ("request", request_gate),
    ("subject", subject_gate),
    ("gateway", gateway_gate),
    ("enrollment", enrollment_gate),
    ("bounds", bounds_gate),
    ("charter", charter_gate),
    ("tool", tool_gate),
    ("approval", approval_gate),
    ("grant", grant_gate),
)


def walk(d: Decision, gates: Sequence[Gate] = AGENT_GATES,
         trace: list[GateOutcome] | None = None) -> Decision:
    """Run ``gates`` in order; the first refusal is raised (and, with ``trace``, recorded
    there with the gates never reached)."""
    for i, (name, check) in enumerate(gates):
        try:
            why = check(d)
        except Exception as err:
            if trace is not None:
                trace.append(_refused(name, err))
                trace.extend(GateOutcome(n, "not_reached") for n, _ in gates[i + 1:])
            raise
        if trace is not None:
            trace.append(GateOutcome(name, "allowed", why))
    return d


def _refused(name: str, err: Exception) -> GateOutcome:
    error = getattr(err, "error", None)
    return GateOutcome(name, "refused", getattr(err, "description", "refused"), error,
                       getattr(err, "reason", None))


def txn_context(d: Decision) -> dict[str, Any]:
    """The Txn-Token's ``tctx``: purpose, tool, action, resource, granted details."""
    tctx = {
        "purpose": d.charter.purpose or None,
        "tool": d.details.tool,
        "action": d.details.action,
        "resource": d.details.resource,
        "authorization_details": list(d.authorization_details) or None,
    }
    return {k: v for k, v in tctx.items() if v is not None}
