"""Explaining a decision without minting anything (``POST /v1/decisions/explain`` and
``writ explain``).

The input is what a token request carries, except that the gateway and the agent may be
named by SPIFFE ID instead of proving themselves with JWT-SVIDs. The explanation walks
``broker.decision.gates.AGENT_GATES``, the very list the token endpoint walks, and reports each gate
in order: allowed and why, refused with the error and reason the token endpoint would
answer, or not reached.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from broker.decision.gates import (
    AGENT_GATES,
    Decision,
    GateOutcome,
    SubjectValidator,
    txn_context,
    walk,
)
from broker.decision.rules import TtlBounds
from broker.decision.user_binding import NamedUser, with_user_binding
from broker.errors import InvalidRequest, OAuthError
from jwks.claims import TOKEN_TYPE_JWT, TOKEN_TYPE_TXN_TOKEN
from jwks.patterns import parse_spiffe_id
from registry.snapshot import GatewayView, RegistrySnapshot

JWT_SPIFFE = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe"
#: Authenticates a gateway from its client assertion (jwt-spiffe only: explaining must not
#: spend a private_key_jwt assertion's jti).
Authenticate = Callable[[dict[str, str]], GatewayView]


class ExplainUser(BaseModel):
    """A user for the on-behalf-of binding gates, named directly (not verified): its
    token's issuer, ``sub`` and the claims the binding reads (``azp``/``client_id``,
    required ``acts_for`` claims)."""

    model_config = ConfigDict(extra="forbid")

    issuer: str = Field(max_length=2048)
    sub: str = Field(min_length=1, max_length=1024)
    claims: dict[str, Any] = Field(default_factory=dict, max_length=64)


class ExplainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gateway: str | None = Field(default=None, max_length=2048)
    client_assertion_type: str | None = Field(default=None, max_length=256)
    client_assertion: str | None = Field(default=None, max_length=16_384)
    agent: str | None = Field(default=None, max_length=2048)
    subject_token: str | None = Field(default=None, max_length=16_384)
    subject_token_type: str = Field(default=TOKEN_TYPE_JWT, max_length=256)
    requested_token_type: str = Field(default=TOKEN_TYPE_TXN_TOKEN, max_length=256)
    audience: str | None = Field(default=None, max_length=2048)
    resource: str | None = Field(default=None, max_length=2048)
    scope: str | None = Field(default=None, max_length=4096)
    request_details: dict[str, Any] | str | None = None
    request_context: dict[str, Any] | str | None = None
    # on behalf of this user: adds the user_client and tenancy gates (docs/delegation.md)
    user: ExplainUser | None = None

    @field_validator("gateway", "agent")
    @classmethod
    def _spiffe_id(cls, value: str | None) -> str | None:
        if value is not None:
            parse_spiffe_id(value)
        return value


class GateReport(BaseModel):
    gate: str
    result: str  # allowed | refused | not_reached
    detail: str = ""
    error: str | None = None
    reason: str | None = None


class Explanation(BaseModel):
    decision: str  # issue | refuse
    error: str | None = None
    reason: str | None = None
    error_description: str | None = None
    agent: str | None = None
    gates: list[GateReport]
    grant: dict[str, Any] | None = None


def _params(req: ExplainRequest) -> dict[str, str]:
    params: dict[str, str] = {}
    for name in ("audience", "resource", "scope", "subject_token"):
        value = getattr(req, name)
        if value is not None:
            params[name] = value
    for name in ("request_details", "request_context"):
        value = getattr(req, name)
        if value is not None:
            params[name] = value if isinstance(value, str) else json.dumps(value)
    return params


def _exchange(req: ExplainRequest, snapshot: RegistrySnapshot,
              authenticate: Authenticate | None) -> tuple[str | None, GatewayView | None, str]:
    """What the token endpoint settles before the gates: client authentication and the
    RFC 8693 parameter rules of the autonomous agent profile."""
    if (req.client_assertion is None) == (req.gateway is None):
        raise InvalidRequest("name the gateway, or give its client_assertion",
                             reason="gateway_missing")
    if req.client_assertion is not None:
        if req.client_assertion_type != JWT_SPIFFE or authenticate is None:
            raise InvalidRequest("explain accepts a jwt-spiffe client assertion only; name "
                                 "the gateway instead", reason="unsupported_assertion_type")
        authenticated = authenticate({"client_assertion_type": JWT_SPIFFE,
                                      "client_assertion": req.client_assertion})
        why = f"gateway {authenticated.client_id} authenticated by its JWT-SVID"
        gateway_id: str | None = authenticated.client_id
        gateway: GatewayView | None = authenticated
    else:
        gateway_id, gateway = req.gateway, snapshot.gateways.get(req.gateway or "")
        why = f"gateway {gateway_id} named directly; not authenticated"
    if req.requested_token_type != TOKEN_TYPE_TXN_TOKEN:
        raise InvalidRequest("this profile issues Txn-Tokens only",
                             reason="unsupported_requested_token_type")
    if req.subject_token is not None and req.subject_token_type != TOKEN_TYPE_JWT:
        raise InvalidRequest("this subject_token_type is not supported",
                             reason="unsupported_subject_token_type")
    if req.subject_token is None and req.agent is None:
        raise InvalidRequest("name the agent, or give its subject_token",
                             reason="subject_token_missing")
    return gateway_id, gateway, why


def explain(
    req: ExplainRequest,
    *,
    snapshot: RegistrySnapshot,
    now: float,
    trust_domain: str,
    ttl_bounds: TtlBounds,
    max_json_depth: int,
    validate_subject: SubjectValidator | None = None,
    authenticate: Authenticate | None = None,
) -> Explanation:
    trace: list[GateOutcome] = []
    try:
        gateway_id, gateway, why = _exchange(req, snapshot, authenticate)
    except OAuthError as err:
        return _refused(err, [GateOutcome("exchange", "refused", err.description, err.error,
                                          err.reason),
                              *(GateOutcome(n, "not_reached") for n, _ in AGENT_GATES)], None)
    trace.append(GateOutcome("exchange", "allowed", why))
    d = Decision(
        snapshot=snapshot, now=now, trust_domain=trust_domain, ttl_bounds=ttl_bounds,
        max_json_depth=max_json_depth, params=_params(req),
        requested_token_type=req.requested_token_type, gateway_id=gateway_id, gateway=gateway,
        validate_subject=validate_subject if req.subject_token is not None else None,
        agent_id=req.agent,
    )
    gates = AGENT_GATES
    if req.user is not None:
        gates = with_user_binding(gates, NamedUser(req.user.issuer, req.user.sub,
                                                   {**req.user.claims, "sub": req.user.sub}))
    try:
        walk(d, gates, trace)
    except OAuthError as err:
        return _refused(err, trace, d.agent_id)
    grant: dict[str, Any] = {
        "subject": d.agent_id, "audience": d.audience, "scope": " ".join(d.scope),
        "expires_in": d.ttl_s, "tctx": txn_context(d),
    }
    if d.tool is not None:
        grant["tool_endpoint"] = d.tool.endpoint
    return Explanation(decision="issue", agent=d.agent_id, gates=_reports(trace), grant=grant)


def _reports(trace: list[GateOutcome]) -> list[GateReport]:
    return [GateReport(gate=o.gate, result=o.result, detail=o.detail, error=o.error,
                       reason=o.reason) for o in trace]


def _refused(err: OAuthError, trace: list[GateOutcome], agent: str | None) -> Explanation:
    return Explanation(decision="refuse", error=err.error, reason=err.reason,
                       error_description=err.description, agent=agent, gates=_reports(trace))
