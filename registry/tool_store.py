"""The tool registry and the namespace bounds: tables, public models, store verbs and the
loaders of the in-memory snapshot (DESIGN §4).

A tool row holds the validated document in force: pinned by a registrar, or the last good
copy fetched from its URL with the times of that fetch. Every write bumps
``registry_version``, so every replica rebuilds its snapshot; callers commit.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from sqlalchemy import JSON, Column, Text, cast
from sqlalchemy import select as select_columns
from sqlmodel import Field, Session, SQLModel, col, select

from registry.bounds import BoundView, NamespaceBoundRule, NamespaceBounds
from registry.errors import Conflict, NotFound
from registry.store import bump_version
from registry.tools import Risk, ToolDocument, ToolView, document_hash, tool_view


class ToolSource(StrEnum):
    pinned = "pinned"  # the registrar supplied the document
    url = "url"  # fetched from the tool id, refreshed in the background


# --- tools ---------------------------------------------------------------------------------


class ToolRecord(SQLModel, table=True):
    __tablename__ = "tools"
    tool_id: str = Field(primary_key=True, max_length=2048)
    source: str = Field(max_length=16)
    document: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    document_hash: str = Field(max_length=80)
    fetched_at: float | None = None
    fresh_until: float | None = None
    usable_until: float | None = None
    # a fetched document that changes something security-relevant waits here for a
    # registrar's approval (docs/tools.md "Refresh is not a silent redirect")
    pending_document: dict[str, Any] | None = Field(default=None,
                                                    sa_column=Column(JSON, nullable=True))
    pending_hash: str | None = Field(default=None, max_length=80)
    pending_changes: list[str] | None = Field(default=None,
                                              sa_column=Column(JSON, nullable=True))
    pending_since: float | None = None
    created_by: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0


class ToolPublic(SQLModel):
    tool_id: str
    source: ToolSource
    document: dict[str, Any]
    document_hash: str
    fetched_at: float | None
    fresh_until: float | None
    usable_until: float | None
    created_by: str
    created_at: float
    updated_at: float
    # a fetched change held for approval (docs/tools.md); never served while pending
    pending_document: dict[str, Any] | None = None
    pending_hash: str | None = None
    pending_changes: list[str] | None = None
    pending_since: float | None = None


class FetchTimes(SQLModel):
    """When a fetched document was read, until when it is fresh, and the last moment it
    may still be used should refreshes keep failing."""

    fetched_at: float
    fresh_until: float
    usable_until: float


def _tool_public(row: ToolRecord) -> ToolPublic:
    return ToolPublic.model_validate(row, from_attributes=True)


def create_tool(session: Session, doc: ToolDocument, *, source: ToolSource,
                times: FetchTimes | None, now: float, by: str) -> ToolPublic:
    if session.get(ToolRecord, doc.tool_id) is not None:
        raise Conflict(f"tool {doc.tool_id} is already registered")
    row = ToolRecord(tool_id=doc.tool_id, source=source.value,
                     document=doc.model_dump(mode="json"), document_hash=document_hash(doc),
                     **(times.model_dump() if times else {}),
                     created_by=by, created_at=now, updated_at=now)
    session.add(row)
    bump_version(session, "tool", doc.tool_id)
    session.flush()
    return _tool_public(row)


def fetch_tool(session: Session, tool_id: str) -> ToolPublic | None:
    row = session.get(ToolRecord, tool_id)
    return None if row is None else _tool_public(row)


def list_tools(session: Session, *, offset: int = 0, limit: int = 100) -> list[ToolPublic]:
    rows = session.exec(select(ToolRecord).order_by(ToolRecord.tool_id).offset(offset)
                        .limit(limit))
    return [_tool_public(r) for r in rows]


def update_tool_document(session: Session, tool_id: str, doc: ToolDocument, *,
                         times: FetchTimes | None, now: float) -> ToolPublic:
    """Replace the document in force (a new pin, or a newer fetch)."""
    row = session.get(ToolRecord, tool_id)
    if row is None:
        raise NotFound(f"no tool {tool_id}")
    row.document = doc.model_dump(mode="json")
    row.document_hash = document_hash(doc)
    row.fetched_at = times.fetched_at if times else None
    row.fresh_until = times.fresh_until if times else None
    row.usable_until = times.usable_until if times else None
    _clear_pending(row)  # a new pin, or the host went back to a harmless document
    row.updated_at = now
    session.add(row)
    bump_version(session, "tool", tool_id)
    session.flush()
    return _tool_public(row)


def _clear_pending(row: ToolRecord) -> None:
    row.pending_document = None
    row.pending_hash = None
    row.pending_changes = None
    row.pending_since = None


def hold_tool_change(session: Session, tool_id: str, doc: ToolDocument, changes: list[str], *,
                     times: FetchTimes, now: float) -> tuple[ToolPublic, bool]:
    """Keep the document in force and hold ``doc`` for approval; the in-force document's
    times move on (its host answered). True when ``doc`` was not already the one held."""
    row = session.get(ToolRecord, tool_id)
    if row is None:
        raise NotFound(f"no tool {tool_id}")
    new_hash = document_hash(doc)
    fresh = row.pending_hash != new_hash
    if fresh:
        row.pending_document = doc.model_dump(mode="json")
        row.pending_hash = new_hash
        row.pending_changes = list(changes)
        row.pending_since = now
    row.fetched_at = times.fetched_at
    row.fresh_until = times.fresh_until
    row.usable_until = times.usable_until
    row.updated_at = now
    session.add(row)
    bump_version(session)
    session.flush()
    return _tool_public(row), fresh


def approve_tool_change(session: Session, tool_id: str, *, expected_hash: str | None,
                        now: float) -> tuple[str, ToolPublic]:
    """Put the held document in force; return the previous document hash. With
    ``expected_hash``, only that held document (it may have changed since it was reviewed)."""
    row = session.get(ToolRecord, tool_id)
    if row is None:
        raise NotFound(f"no tool {tool_id}")
    if row.pending_document is None or row.pending_hash is None:
        raise Conflict(f"tool {tool_id} has no change pending")
    if expected_hash is not None and expected_hash != row.pending_hash:
        raise Conflict(f"the change pending for {tool_id} is not {expected_hash}")
    doc = ToolDocument.model_validate(row.pending_document)  # stored validated; checked again
    before = row.document_hash
    row.document = doc.model_dump(mode="json")
    row.document_hash = document_hash(doc)
    _clear_pending(row)
    row.updated_at = now
    session.add(row)
    bump_version(session)
    session.flush()
    return before, _tool_public(row)


def delete_tool(session: Session, tool_id: str) -> None:
    row = session.get(ToolRecord, tool_id)
    if row is None:
        raise NotFound(f"no tool {tool_id}")
    session.delete(row)
    bump_version(session, "tool", tool_id)
    session.flush()


_TOOL_COLUMNS = (col(ToolRecord.tool_id), col(ToolRecord.source),
                 cast(col(ToolRecord.document), Text), col(ToolRecord.document_hash),
                 col(ToolRecord.fetched_at), col(ToolRecord.fresh_until),
                 col(ToolRecord.usable_until))


def _tool_views(session: Session, tool_id: str | None = None) -> dict[str, ToolView]:
    """Tools as the snapshot holds them, parsed straight from the stored JSON. A row whose
    document no longer validates (the rules tightened since it was stored) is left out: such
    a tool resolves to nothing."""
    query = select_columns(*_TOOL_COLUMNS)
    if tool_id is not None:
        query = query.where(col(ToolRecord.tool_id) == tool_id)
    views: dict[str, ToolView] = {}
    for tid, source, document, digest, fetched_at, fresh_until, usable_until in \
            session.execute(query):
        try:
            doc = ToolDocument.model_validate_json(document)
        except ValueError:
            continue
        views[tid] = tool_view(doc, source=source, fetched_at=fetched_at,
                               fresh_until=fresh_until, usable_until=usable_until,
                               digest=digest)
    return views


def load_tool_views(session: Session) -> Mapping[str, ToolView]:
    """Every tool, for the snapshot."""
    return MappingProxyType(_tool_views(session))


def load_tool_view(session: Session, tool_id: str) -> ToolView | None:
    """One tool, for a snapshot delta; None when it is gone or no longer valid."""
    return _tool_views(session, tool_id).get(tool_id)


# --- namespace bounds -------------------------------------------------------------------------


class NamespaceBoundRecord(SQLModel, table=True):
    __tablename__ = "namespace_bounds"
    pattern: str = Field(primary_key=True, max_length=2048)
    tags: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    scopes: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    max_risk: str = Field(max_length=16)
    description: str = Field(default="", max_length=1024)
    created_by: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0


class NamespaceBoundPublic(SQLModel):
    pattern: str
    tags: list[str]
    scopes: list[str]
    max_risk: Risk
    description: str
    created_by: str
    created_at: float
    updated_at: float


def _bound_public(row: NamespaceBoundRecord) -> NamespaceBoundPublic:
    return NamespaceBoundPublic.model_validate(row, from_attributes=True)


def put_bound(session: Session, rule: NamespaceBoundRule, *, now: float,
              by: str) -> tuple[NamespaceBoundPublic, bool]:
    """Create the bound for ``rule.pattern`` or replace it; True when it was created."""
    row = session.get(NamespaceBoundRecord, rule.pattern)
    created = row is None
    if row is None:
        row = NamespaceBoundRecord(pattern=rule.pattern, max_risk=rule.max_risk.value,
                                   created_by=by, created_at=now)
    row.tags = list(rule.tags)
    row.scopes = list(rule.scopes)
    row.max_risk = rule.max_risk.value
    row.description = rule.description
    row.updated_at = now
    session.add(row)
    bump_version(session, "bound", rule.pattern)
    session.flush()
    return _bound_public(row), created


def fetch_bound(session: Session, pattern: str) -> NamespaceBoundPublic | None:
    row = session.get(NamespaceBoundRecord, pattern)
    return None if row is None else _bound_public(row)


def list_bounds(session: Session) -> list[NamespaceBoundPublic]:
    rows = session.exec(select(NamespaceBoundRecord).order_by(NamespaceBoundRecord.pattern))
    return [_bound_public(r) for r in rows]


def delete_bound(session: Session, pattern: str) -> None:
    row = session.get(NamespaceBoundRecord, pattern)
    if row is None:
        raise NotFound(f"no namespace bound {pattern}")
    session.delete(row)
    bump_version(session, "bound", pattern)
    session.flush()


def bound_view(r: NamespaceBoundRecord) -> BoundView:
    return BoundView(r.pattern, frozenset(r.tags), frozenset(r.scopes), Risk(r.max_risk))


def load_bounds(session: Session) -> NamespaceBounds:
    rows = session.execute(select_columns(
        col(NamespaceBoundRecord.pattern), col(NamespaceBoundRecord.tags),
        col(NamespaceBoundRecord.scopes), col(NamespaceBoundRecord.max_risk)))
    return NamespaceBounds.of(
        BoundView(pattern, frozenset(tags), frozenset(scopes), Risk(risk))
        for pattern, tags, scopes, risk in rows)
