"""``/v1/tools`` and ``/v1/bounds``: the tool registry and the SPIFFE namespace bounds.

A tool is registered by URL (Writ fetches and validates its metadata document, then keeps
it fresh) or pinned with a document the registrar supplies. Tools serve every namespace,
so only an admin token bound to no namespace may change them; a bound-limited token may
set bounds inside its own namespaces only.
"""

# No ``from __future__ import annotations``: FastAPI reads the route signatures.
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlmodel import Session

from broker.admin.auth import forbidden, require_scope
from broker.admin.routes import AdminRoute, commit_or_conflict, record_change
from broker.admin.tokens import AdminScope, AdminToken
from broker.audit.writer import AuditEvent
from broker.runtime import Broker
from broker.tools.fetch import ToolFetchError
from broker.tools.refresh import refresh_tool
from registry import tool_store
from registry.bounds import NamespaceBoundRule
from registry.errors import Conflict, Invalid, NotFound
from registry.namespace import pattern_within
from registry.tool_store import NamespaceBoundPublic, ToolPublic, ToolSource
from registry.tools import ToolDocument, ToolError, parse_tool_document

MAX_PAGE = 500


class ToolRegistration(BaseModel):
    """Exactly one of ``url`` (fetch it) or ``document`` (pin it)."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, max_length=2048)
    document: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one(self) -> "ToolRegistration":
        if (self.url is None) == (self.document is None):
            raise ValueError("give exactly one of url and document")
        return self


class ToolPin(BaseModel):
    model_config = ConfigDict(extra="forbid")

    document: dict[str, Any]


class ToolChangeApproval(BaseModel):
    """Approve the held document; with ``pending_hash``, only the one reviewed."""

    model_config = ConfigDict(extra="forbid")

    pending_hash: str | None = Field(default=None, max_length=80)


def fetch_failed(err: ToolFetchError) -> Invalid:
    return Invalid(f"tool metadata could not be fetched ({err.reason}): {err}")


def pinned_document(doc: dict[str, Any]) -> ToolDocument:
    try:
        return parse_tool_document(doc)
    except ToolError as err:
        raise Invalid(f"tool metadata refused ({err.reason}): {err}") from None


def tool_audit(tool: ToolPublic) -> dict[str, Any]:
    detail: dict[str, Any] = {"source": tool.source.value, "document_hash": tool.document_hash}
    if tool.pending_hash is not None:  # docs/tools.md: a change held for approval
        detail.update(pending_hash=tool.pending_hash, pending_changes=tool.pending_changes)
    return detail


def tools_router(broker: Broker) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["admin"], route_class=AdminRoute)

    def scope(s: AdminScope) -> Any:
        return Depends(require_scope(broker, s))

    ToolsRead = Annotated[AdminToken, scope(AdminScope.tools_read)]
    ToolsWrite = Annotated[AdminToken, scope(AdminScope.tools_write)]
    BoundsRead = Annotated[AdminToken, scope(AdminScope.bounds_read)]
    BoundsWrite = Annotated[AdminToken, scope(AdminScope.bounds_write)]
    Offset = Annotated[int, Query(ge=0)]
    Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]

    def unbound(principal: AdminToken) -> None:
        if principal.namespaces:
            raise forbidden("a namespace-bound admin token cannot change the tool registry")

    def within_token(principal: AdminToken, pattern: str) -> None:
        if principal.namespaces and not pattern_within(pattern, tuple(principal.namespaces)):
            raise forbidden("this admin token may not set bounds outside its namespaces")

    def changed(principal: AdminToken, reason: str, *, tool: str | None = None,
                **detail: Any) -> None:
        broker.snapshots.refresh()  # this replica applies the change at once (DESIGN §6)
        record_change(broker, AuditEvent(kind="admin", decision="changed", reason=reason,
                                         tool=tool, detail={"by": principal.id, **detail}))

    # --- tools -----------------------------------------------------------------------

    @router.post("/tools", status_code=201, response_model=ToolPublic)
    def register_tool(body: ToolRegistration, principal: ToolsWrite) -> ToolPublic:
        unbound(principal)
        now = broker.clock()
        if body.url is not None:
            try:
                fetched = broker.tool_fetcher.fetch(body.url)
            except ToolFetchError as err:
                raise fetch_failed(err) from None
            doc, source, times = fetched.document, ToolSource.url, fetched.times
        else:
            assert body.document is not None
            doc, source, times = pinned_document(body.document), ToolSource.pinned, None
        with Session(broker.engine) as session:
            tool = tool_store.create_tool(session, doc, source=source, times=times, now=now,
                                          by=principal.id)
            commit_or_conflict(session)
        changed(principal, "tool.registered", tool=tool.tool_id, **tool_audit(tool))
        return tool

    @router.get("/tools", response_model=list[ToolPublic])
    def list_tools(principal: ToolsRead, offset: Offset = 0,
                   limit: Limit = 100) -> list[ToolPublic]:
        with Session(broker.engine) as session:
            return tool_store.list_tools(session, offset=offset, limit=limit)

    @router.post("/tools/{tool_id:path}/refresh", response_model=ToolPublic)
    def refresh(tool_id: str, principal: ToolsWrite) -> ToolPublic:
        unbound(principal)
        try:
            result = refresh_tool(broker.engine, broker.tool_fetcher, tool_id,
                                  now=broker.clock())
        except ToolFetchError as err:
            raise fetch_failed(err) from None
        tool = result.tool
        changed(principal, "tool.change_held" if result.held else "tool.refreshed",
                tool=tool_id, previous_hash=result.previous_hash, **tool_audit(tool))
        return tool

    @router.post("/tools/{tool_id:path}/approve-change", response_model=ToolPublic)
    def approve_change(tool_id: str, body: ToolChangeApproval,
                       principal: ToolsWrite) -> ToolPublic:
        """Adopt the fetched document held for approval (docs/tools.md)."""
        unbound(principal)
        with Session(broker.engine) as session:
            pending = tool_store.fetch_tool(session, tool_id)
            before, tool = tool_store.approve_tool_change(
                session, tool_id, expected_hash=body.pending_hash, now=broker.clock())
            session.commit()
        changed(principal, "tool.change_approved", tool=tool_id, previous_hash=before,
                changes=pending.pending_changes if pending else None, **tool_audit(tool))
        return tool

    @router.get("/tools/{tool_id:path}", response_model=ToolPublic)
    def show_tool(tool_id: str, principal: ToolsRead) -> ToolPublic:
        with Session(broker.engine) as session:
            tool = tool_store.fetch_tool(session, tool_id)
        if tool is None:
            raise NotFound(f"no tool {tool_id}")
        return tool

    @router.put("/tools/{tool_id:path}", response_model=ToolPublic)
    def pin_tool(tool_id: str, body: ToolPin, principal: ToolsWrite) -> ToolPublic:
        """Replace a pinned tool's document."""
        unbound(principal)
        doc = pinned_document(body.document)
        if doc.tool_id != tool_id:
            raise Invalid("the document's tool_id is not the tool being replaced")
        with Session(broker.engine) as session:
            current = tool_store.fetch_tool(session, tool_id)
            if current is None:
                raise NotFound(f"no tool {tool_id}")
            if current.source is not ToolSource.pinned:
                raise Conflict(f"tool {tool_id} is registered by URL; refresh it instead")
            tool = tool_store.update_tool_document(session, tool_id, doc, times=None,
                                                   now=broker.clock())
            commit_or_conflict(session)
        changed(principal, "tool.pinned", tool=tool_id, previous_hash=current.document_hash,
                **tool_audit(tool))
        return tool

    @router.delete("/tools/{tool_id:path}", status_code=204, response_class=Response)
    def remove_tool(tool_id: str, principal: ToolsWrite) -> Response:
        unbound(principal)
        with Session(broker.engine) as session:
            tool_store.delete_tool(session, tool_id)
            commit_or_conflict(session)
        changed(principal, "tool.removed", tool=tool_id)
        return Response(status_code=204)

    # --- namespace bounds --------------------------------------------------------------

    @router.put("/bounds", response_model=NamespaceBoundPublic,
                responses={201: {"model": NamespaceBoundPublic}})
    def set_bound(body: NamespaceBoundRule, principal: BoundsWrite) -> Response:
        """Create the bound of ``pattern`` (201) or replace it (200)."""
        within_token(principal, body.pattern)
        with Session(broker.engine) as session:
            bound, created = tool_store.put_bound(session, body, now=broker.clock(),
                                                  by=principal.id)
            commit_or_conflict(session)
        changed(principal, "bound.created" if created else "bound.updated",
                pattern=bound.pattern, tags=bound.tags, scopes=bound.scopes,
                max_risk=bound.max_risk.value)
        return JSONResponse(bound.model_dump(mode="json"), 201 if created else 200)

    @router.get("/bounds", response_model=list[NamespaceBoundPublic])
    def list_bounds(principal: BoundsRead) -> list[NamespaceBoundPublic]:
        with Session(broker.engine) as session:
            return tool_store.list_bounds(session)

    @router.get("/bounds/{pattern:path}", response_model=NamespaceBoundPublic)
    def show_bound(pattern: str, principal: BoundsRead) -> NamespaceBoundPublic:
        with Session(broker.engine) as session:
            bound = tool_store.fetch_bound(session, pattern)
        if bound is None:
            raise NotFound(f"no namespace bound {pattern}")
        return bound

    @router.delete("/bounds/{pattern:path}", status_code=204, response_class=Response)
    def remove_bound(pattern: str, principal: BoundsWrite) -> Response:
        with Session(broker.engine) as session:
            if tool_store.fetch_bound(session, pattern) is None:
                raise NotFound(f"no namespace bound {pattern}")
            within_token(principal, pattern)
            tool_store.delete_bound(session, pattern)
            commit_or_conflict(session)
        changed(principal, "bound.removed", pattern=pattern)
        return Response(status_code=204)

    return router
