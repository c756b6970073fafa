"""``POST /v1/decisions/explain``: each gate of a token request, in order, and why it let
the request through or refused it. Nothing is minted and nothing is written."""

# No ``from __future__ import annotations``: FastAPI reads the route signatures.
from typing import Annotated

from fastapi import APIRouter, Depends

from broker.admin.auth import forbidden, require_scope
from broker.admin.routes import AdminRoute
from broker.admin.tokens import AdminScope, AdminToken
from broker.decision.explain import ExplainRequest, Explanation, explain
from broker.runtime import Broker
from registry.namespace import within
from registry.snapshot import GatewayView


def decisions_router(broker: Broker) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["admin"], route_class=AdminRoute)
    Explainer = Annotated[AdminToken,
                          Depends(require_scope(broker, AdminScope.decisions_explain))]

    @router.post("/decisions/explain", response_model=Explanation)
    def explain_decision(body: ExplainRequest, principal: Explainer) -> Explanation:
        snapshot = broker.snapshot

        def authenticate(params: dict[str, str]) -> GatewayView:
            return broker.clients.authenticate(params, authorization=None,
                                               snapshot=snapshot).gateway

        answer = explain(
            body, snapshot=snapshot, now=broker.clock(),
            trust_domain=broker.settings.trust_domain, ttl_bounds=broker.ttl,
            max_json_depth=broker.settings.max_json_depth,
            validate_subject=lambda token: broker.svids.validate(token, (broker.issuer,)),
            authenticate=authenticate,
        )
        namespaces = tuple(principal.namespaces)
        # a registrar bound to namespaces may not learn about agents outside them
        if namespaces and (answer.agent is None or not within(answer.agent, namespaces)):
            raise forbidden("this admin token may not explain decisions for agents outside "
                            "its namespaces")
        return answer

    return router
