"""``/v1/issuers``: the trusted user-token issuers of the on-behalf-of profiles.

Trusting an issuer lets its users' tokens start transactions anywhere in the trust domain,
so a namespace-bound admin token may read issuers but not change them.
"""

# No ``from __future__ import annotations``: FastAPI reads the route signatures.
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from sqlmodel import Session

from broker.admin.auth import forbidden, require_scope
from broker.admin.routes import AdminRoute, commit_or_conflict, record_change
from broker.admin.tokens import AdminScope, AdminToken
from broker.audit.writer import AuditEvent
from broker.runtime import Broker
from registry.errors import NotFound
from registry.issuers import (
    TrustedIssuerCreate,
    TrustedIssuerPublic,
    TrustedIssuerUpdate,
    create_issuer,
    delete_issuer,
    fetch_issuer,
    list_issuers,
    update_issuer,
)


def issuer_audit_detail(issuer: TrustedIssuerPublic) -> dict[str, Any]:
    return {"issuer": issuer.issuer, "discovery": issuer.discovery, "jwks_uri": issuer.jwks_uri,
            "audiences": issuer.audiences, "algorithms": issuer.algorithms,
            "ca_file": issuer.ca_file,
            "allowed_clients": issuer.allowed_clients,
            "agent_namespaces": issuer.agent_namespaces}


def issuers_router(broker: Broker) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["admin"], route_class=AdminRoute)
    IssuersRead = Annotated[AdminToken, Depends(require_scope(broker, AdminScope.issuers_read))]
    IssuersWrite = Annotated[AdminToken,
                             Depends(require_scope(broker, AdminScope.issuers_write))]

    def unbound(principal: AdminToken) -> None:
        if principal.namespaces:
            raise forbidden("a namespace-bound admin token cannot change trusted issuers")

    def changed(principal: AdminToken, reason: str, **detail: Any) -> None:
        broker.snapshots.refresh()  # this replica applies the change at once (DESIGN §6)
        record_change(broker, AuditEvent(kind="admin", decision="changed", reason=reason,
                                         detail={"by": principal.id, **detail}))

    @router.post("/issuers", status_code=201, response_model=TrustedIssuerPublic)
    def create(body: TrustedIssuerCreate, principal: IssuersWrite) -> TrustedIssuerPublic:
        unbound(principal)
        with Session(broker.engine) as session:
            issuer = create_issuer(session, body, now=broker.clock(), by=principal.id)
            commit_or_conflict(session)
        changed(principal, "issuer.created", **issuer_audit_detail(issuer))
        return issuer

    @router.get("/issuers", response_model=list[TrustedIssuerPublic])
    def list_(principal: IssuersRead) -> list[TrustedIssuerPublic]:
        with Session(broker.engine) as session:
            return list_issuers(session)

    @router.get("/issuers/{issuer:path}", response_model=TrustedIssuerPublic)
    def show(issuer: str, principal: IssuersRead) -> TrustedIssuerPublic:
        with Session(broker.engine) as session:
            found = fetch_issuer(session, issuer)
        if found is None:
            raise NotFound(f"no trusted issuer {issuer}")
        return found

    @router.patch("/issuers/{issuer:path}", response_model=TrustedIssuerPublic)
    def update(issuer: str, body: TrustedIssuerUpdate,
               principal: IssuersWrite) -> TrustedIssuerPublic:
        unbound(principal)
        with Session(broker.engine) as session:
            updated = update_issuer(session, issuer, body, now=broker.clock())
            session.commit()
        changed(principal, "issuer.updated", **issuer_audit_detail(updated))
        return updated

    @router.delete("/issuers/{issuer:path}", status_code=204, response_class=Response)
    def remove(issuer: str, principal: IssuersWrite) -> Response:
        unbound(principal)
        with Session(broker.engine) as session:
            delete_issuer(session, issuer)
            session.commit()
        changed(principal, "issuer.removed", issuer=issuer)
        return Response(status_code=204)

    return router
