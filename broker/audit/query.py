"""Reading the audit trail by agent, user (subject), gateway, tool, txn, decision and time,
a page at a time with a keyset on ``seq`` (stable while records are appended)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel
from sqlalchemy import Engine, select

from broker.audit.writer import AuditRecord


class AuditRecordPublic(BaseModel):
    """One record exactly as stored (it holds fingerprints, never a token or a secret)."""

    seq: int
    at: float
    kind: str
    decision: str
    reason: str
    gateway: str | None
    agent: str | None
    subject: str | None
    tool: str | None
    scope: str | None
    txn: str | None
    jti: str | None
    detail: dict[str, Any]
    prev_hash: str
    hash: str


class AuditPage(BaseModel):
    records: list[AuditRecordPublic]
    #: pass as ``cursor`` for the next page; null on the last page
    next_cursor: int | None


@dataclass(frozen=True, slots=True)
class AuditFilter:
    agent: str | None = None
    subject: str | None = None
    gateway: str | None = None
    tool: str | None = None
    txn: str | None = None
    jti: str | None = None
    kind: str | None = None
    decision: str | None = None
    since: float | None = None  # at >= since
    until: float | None = None  # at < until


def query_audit(
    engine: Engine,
    where: AuditFilter,
    *,
    cursor: int | None = None,
    limit: int = 100,
    order: Literal["asc", "desc"] = "asc",
) -> AuditPage:
    t = AuditRecord.__table__  # type: ignore[attr-defined]
    stmt = select(t)
    for name in ("agent", "subject", "gateway", "tool", "txn", "jti", "kind", "decision"):
        value = getattr(where, name)
        if value is not None:
            stmt = stmt.where(t.c[name] == value)
    if where.since is not None:
        stmt = stmt.where(t.c.at >= where.since)
    if where.until is not None:
        stmt = stmt.where(t.c.at < where.until)
    if order == "asc":
        if cursor is not None:
            stmt = stmt.where(t.c.seq > cursor)
        stmt = stmt.order_by(t.c.seq.asc())
    else:
        if cursor is not None:
            stmt = stmt.where(t.c.seq < cursor)
        stmt = stmt.order_by(t.c.seq.desc())
    with engine.connect() as conn:
        rows = conn.execute(stmt.limit(limit + 1)).mappings().all()
    records = [AuditRecordPublic.model_validate(dict(r)) for r in rows[:limit]]
    more = len(rows) > limit
    return AuditPage(records=records, next_cursor=records[-1].seq if more and records else None)
