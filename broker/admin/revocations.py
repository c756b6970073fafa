"""``/v1/revocations`` (revocation and the kill switch), ``/v1/resource-servers`` (who may
call ``/introspect``) and ``GET /v1/audit`` (the audit trail, filtered and paged).

A namespace-bound admin token may revoke agents inside its namespaces and gateways that speak
only for them, and read the audit of one such agent; every other revocation, every
resource-server change and an unfiltered audit read need an unbound token.
"""

# No ``from __future__ import annotations``: FastAPI reads the route signatures.
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from broker.admin.auth import AdminApiError, forbidden, require_scope
from broker.admin.params import SpiffeIdPath, SpiffeIdQuery
from broker.admin.routes import AdminRoute, commit_or_conflict, record_change
from broker.admin.tokens import AdminScope, AdminToken
from broker.audit.query import AuditFilter, AuditPage, query_audit
from broker.audit.writer import AuditEvent
from broker.auth.resource_servers import (
    ResourceServerCreate,
    ResourceServerPublic,
    ResourceServerUpdate,
    create_resource_server,
    delete_resource_server,
    fetch_resource_server,
    list_resource_servers,
    set_resource_server_status,
    update_resource_server,
)
from broker.revocation.revoked import RevocationKind
from broker.revocation.service import RevocationService, revocation_event
from broker.revocation.store import RevocationCreate, RevocationPublic, list_revocations
from broker.runtime import Broker
from jwks.errors import JwksError
from registry import store
from registry.errors import Invalid, NotFound
from registry.models import Status
from registry.namespace import pattern_within, within

MAX_PAGE = 500


class RevocationBody(RevocationCreate):
    #: kill switch: also suspend the agent or gateway named (ignored for other kinds)
    suspend: bool = True


class RevocationResult(BaseModel):
    revocation: RevocationPublic
    #: the agent or gateway suspended by this revocation, if any
    suspended: str | None


def revocation_router(broker: Broker, service: RevocationService) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["admin"], route_class=AdminRoute)

    def scope(s: AdminScope) -> Any:
        return Depends(require_scope(broker, s))

    RevRead = Annotated[AdminToken, scope(AdminScope.revocations_read)]
    RevWrite = Annotated[AdminToken, scope(AdminScope.revocations_write)]
    RsRead = Annotated[AdminToken, scope(AdminScope.resource_servers_read)]
    RsWrite = Annotated[AdminToken, scope(AdminScope.resource_servers_write)]
    AuditRead = Annotated[AdminToken, scope(AdminScope.audit_read)]
    Offset = Annotated[int, Query(ge=0)]
    Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]

    def unbound(principal: AdminToken, what: str) -> None:
        if principal.namespaces:
            raise forbidden(f"a namespace-bound admin token cannot {what}")

    def check_revocation_bounds(principal: AdminToken, body: RevocationCreate) -> None:
        bound = tuple(principal.namespaces)
        if not bound:
            return
        if body.kind is RevocationKind.agent and within(body.value, bound):
            return
        if body.kind is RevocationKind.gateway:
            with Session(broker.engine) as session:
                gw = store.fetch_gateway(session, body.value)
            if gw is not None and gw.agent_namespaces and all(
                pattern_within(p, bound) for p in gw.agent_namespaces
            ):
                return
        raise forbidden("this admin token may not revoke outside its namespaces")

    # --- revocations -------------------------------------------------------------------

    @router.post("/revocations", status_code=201, response_model=RevocationResult)
    def revoke(body: RevocationBody, principal: RevWrite) -> RevocationResult:
        check_revocation_bounds(principal, body)
        data = RevocationCreate.model_validate(body.model_dump(exclude={"suspend"}))
        try:
            revoked = service.revoke(data, by=principal.id, suspend=body.suspend)
        except JwksError as err:  # not a SPIFFE ID
            raise Invalid(f"value: {err}") from err
        except SQLAlchemyError as err:
            raise AdminApiError(503, "temporarily_unavailable",
                                "the revocation could not be stored; try again") from err
        record_change(broker, revocation_event(revoked, by=principal.id))
        return RevocationResult(revocation=revoked.revocation, suspended=revoked.suspended)

    @router.get("/revocations", response_model=list[RevocationPublic])
    def list_(principal: RevRead, kind: RevocationKind | None = None,
              value: Annotated[str | None, Query(max_length=2048)] = None,
              offset: Offset = 0, limit: Limit = 100) -> list[RevocationPublic]:
        with Session(broker.engine) as session:
            return list_revocations(session, now=broker.clock(), kind=kind, value=value,
                                    offset=offset, limit=limit)

    # --- resource servers --------------------------------------------------------------

    def rs_changed(principal: AdminToken, reason: str, client_id: str, **detail: Any) -> None:
        broker.snapshots.refresh()  # this replica applies the change at once (DESIGN §6)
        record_change(broker, AuditEvent(
            kind="admin", decision="changed", reason=reason,
            detail={"by": principal.id, "resource_server": client_id, **detail}))

    @router.post("/resource-servers", status_code=201, response_model=ResourceServerPublic)
    def create_rs(body: ResourceServerCreate, principal: RsWrite) -> ResourceServerPublic:
        unbound(principal, "register resource servers")
        with Session(broker.engine) as session:
            rs = create_resource_server(session, body, now=broker.clock())
            commit_or_conflict(session)
        rs_changed(principal, "resource_server.created", rs.client_id,
                   auth_method=str(rs.auth_method), audiences=rs.audiences)
        return rs

    @router.get("/resource-servers", response_model=list[ResourceServerPublic])
    def list_rs(principal: RsRead, offset: Offset = 0,
                limit: Limit = 100) -> list[ResourceServerPublic]:
        with Session(broker.engine) as session:
            return list_resource_servers(session, offset=offset, limit=limit)

    @router.get("/resource-servers/{client_id:path}", response_model=ResourceServerPublic)
    def show_rs(client_id: SpiffeIdPath, principal: RsRead) -> ResourceServerPublic:
        with Session(broker.engine) as session:
            rs = fetch_resource_server(session, client_id)
        if rs is None:
            raise NotFound(f"no resource server {client_id}")
        return rs

    @router.patch("/resource-servers/{client_id:path}", response_model=ResourceServerPublic)
    def update_rs(client_id: SpiffeIdPath, body: ResourceServerUpdate,
                  principal: RsWrite) -> ResourceServerPublic:
        unbound(principal, "change resource servers")
        with Session(broker.engine) as session:
            rs = update_resource_server(session, client_id, body, now=broker.clock())
            commit_or_conflict(session)
        rs_changed(principal, "resource_server.updated", client_id,
                   changed=sorted(body.model_fields_set), audiences=rs.audiences)
        return rs

    def set_status(client_id: str, status: Status, principal: AdminToken,
                   reason: str) -> ResourceServerPublic:
        unbound(principal, "change resource servers")
        with Session(broker.engine) as session:
            rs = set_resource_server_status(session, client_id, status, now=broker.clock())
            commit_or_conflict(session)
        rs_changed(principal, reason, client_id)
        return rs

    @router.post("/resource-servers/{client_id:path}/suspend",
                 response_model=ResourceServerPublic)
    def suspend_rs(client_id: SpiffeIdPath, principal: RsWrite) -> ResourceServerPublic:
        return set_status(client_id, Status.suspended, principal, "resource_server.suspended")

    @router.post("/resource-servers/{client_id:path}/resume",
                 response_model=ResourceServerPublic)
    def resume_rs(client_id: SpiffeIdPath, principal: RsWrite) -> ResourceServerPublic:
        return set_status(client_id, Status.active, principal, "resource_server.resumed")

    @router.delete("/resource-servers/{client_id:path}", status_code=204,
                   response_class=Response)
    def delete_rs(client_id: SpiffeIdPath, principal: RsWrite) -> Response:
        unbound(principal, "change resource servers")
        with Session(broker.engine) as session:
            delete_resource_server(session, client_id)
            commit_or_conflict(session)
        rs_changed(principal, "resource_server.removed", client_id)
        return Response(status_code=204)

    # --- audit -------------------------------------------------------------------------

    Text = Annotated[str | None, Query(max_length=2048)]

    @router.get("/audit", response_model=AuditPage)
    def audit(principal: AuditRead, agent: SpiffeIdQuery = None, subject: Text = None,
              gateway: SpiffeIdQuery = None, tool: Text = None,
              txn: Annotated[str | None, Query(max_length=64)] = None,
              jti: Annotated[str | None, Query(max_length=64)] = None,
              kind: Annotated[str | None, Query(max_length=32)] = None,
              decision: Annotated[str | None, Query(max_length=16)] = None,
              since: float | None = None, until: float | None = None,
              cursor: Annotated[int | None, Query(ge=0)] = None,
              order: Literal["asc", "desc"] = "asc", limit: Limit = 100) -> AuditPage:
        bound = tuple(principal.namespaces)
        if bound and (agent is None or not within(agent, bound)):
            raise forbidden("a namespace-bound admin token reads the audit of one agent "
                            "inside its namespaces: pass agent=")
        where = AuditFilter(agent=agent, subject=subject, gateway=gateway, tool=tool, txn=txn,
                            jti=jti, kind=kind, decision=decision, since=since, until=until)
        return query_audit(broker.engine, where, cursor=cursor, limit=limit, order=order)

    return router
