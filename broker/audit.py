"""Tamper-evident audit trail with group commit (DESIGN §6-7).

Every record carries the hash of the one before it. One writer thread per process takes
the records waiting, locks the chain head row (which serialises writers across replicas),
appends the batch in one transaction and commits; each request waits until its record is
durable before the response is sent. Records hold token fingerprints, never tokens.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import JSON, Column, Engine, insert, select, update
from sqlmodel import Field, SQLModel

log = logging.getLogger(__name__)

GENESIS = "0" * 64


class AuditRecord(SQLModel, table=True):
    __tablename__ = "audit_records"
    seq: int = Field(primary_key=True)
    at: float = Field(index=True)
    kind: str = Field(max_length=32)  # token | admin | key | signal
    decision: str = Field(max_length=16)  # issued | denied | changed
    reason: str = Field(default="", max_length=128)
    gateway: str | None = Field(default=None, index=True, max_length=2048)
    agent: str | None = Field(default=None, index=True, max_length=2048)
    subject: str | None = Field(default=None, index=True, max_length=2048)
    tool: str | None = Field(default=None, index=True, max_length=2048)
    scope: str | None = Field(default=None, max_length=4096)
    txn: str | None = Field(default=None, index=True, max_length=64)
    jti: str | None = Field(default=None, index=True, max_length=64)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)


class AuditHead(SQLModel, table=True):
    __tablename__ = "audit_head"
    id: int = Field(default=1, primary_key=True)
    seq: int = 0
    hash: str = GENESIS


@dataclass(frozen=True, slots=True)
class AuditEvent:
    kind: str
    decision: str
    reason: str = ""
    gateway: str | None = None
    agent: str | None = None
    subject: str | None = None
    tool: str | None = None
    scope: str | None = None
    txn: str | None = None
    jti: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


_HASHED = (
    "seq",
    "at",
    "kind",
    "decision",
    "reason",
    "gateway",
    "agent",
    "subject",
    "tool",
    "scope",
    "txn",
    "jti",
    "detail",
    "prev_hash",
)


def record_hash(row: dict[str, Any]) -> str:
    body = json.dumps(
        {k: row[k] for k in _HASHED}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(body.encode()).hexdigest()


class AuditUnavailable(Exception):
    """The record could not be made durable; the caller must not answer with a token."""


class AuditWriter:
    def __init__(
        self,
        engine: Engine,
        *,
        batch_max: int = 256,
        batch_wait_ms: float = 1.0,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self._batch_max = batch_max
        self._batch_wait = batch_wait_ms / 1000.0
        self._timeout = timeout_s
        self._clock = clock
        self._queue: queue.SimpleQueue[tuple[AuditEvent, concurrent.futures.Future[int]] | None]
        self._queue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.batches = 0
        self.records = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="writ-audit", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=10)
            self._thread = None

    def submit(self, event: AuditEvent) -> concurrent.futures.Future[int]:
        fut: concurrent.futures.Future[int] = concurrent.futures.Future()
        if self._thread is None:
            fut.set_exception(AuditUnavailable("audit writer is not running"))
        else:
            self._queue.put((event, fut))
        return fut

    async def record(self, event: AuditEvent) -> int:
        """Append ``event`` and wait until it is durable; returns its sequence number."""
        try:
            return await asyncio.wait_for(asyncio.wrap_future(self.submit(event)), self._timeout)
        except TimeoutError as err:
            raise AuditUnavailable("audit write timed out") from err

    def record_sync(self, event: AuditEvent) -> int:
        try:
            return self.submit(event).result(self._timeout)
        except concurrent.futures.TimeoutError as err:
            raise AuditUnavailable("audit write timed out") from err

    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is None:
                break
            batch = [item]
            deadline = time.monotonic() + self._batch_wait
            while len(batch) < self._batch_max:
                try:
                    nxt = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
            self._write(batch)

    def _write(self, batch: list[tuple[AuditEvent, concurrent.futures.Future[int]]]) -> None:
        try:
            seqs = self._append([e for e, _ in batch])
        except Exception as err:
            log.error("audit batch of %d failed: %s", len(batch), type(err).__name__)
            for _, fut in batch:
                fut.set_exception(AuditUnavailable("audit store unavailable"))
            return
        self.batches += 1
        self.records += len(batch)
        for (_, fut), seq in zip(batch, seqs, strict=True):
            fut.set_result(seq)

    def _append(self, events: list[AuditEvent]) -> list[int]:
        head = AuditHead.__table__  # type: ignore[attr-defined]
        records = AuditRecord.__table__  # type: ignore[attr-defined]
        now = self._clock()
        with self._engine.begin() as conn:
            # Writing the head row first takes its lock (row lock on PostgreSQL, the write
            # lock on SQLite), so concurrent writers append one batch at a time.
            if (
                conn.execute(update(head).where(head.c.id == 1).values(seq=head.c.seq)).rowcount
                == 0
            ):
                conn.execute(insert(head).values(id=1, seq=0, hash=GENESIS))
            seq, prev = conn.execute(select(head.c.seq, head.c.hash).where(head.c.id == 1)).one()
            rows = []
            for e in events:
                seq += 1
                row = {**asdict(e), "seq": seq, "at": now, "prev_hash": prev}
                row["hash"] = prev = record_hash(row)
                rows.append(row)
            conn.execute(insert(records), rows)
            conn.execute(update(head).where(head.c.id == 1).values(seq=seq, hash=prev))
        return [r["seq"] for r in rows]


@dataclass(frozen=True)
class ChainVerdict:
    ok: bool
    count: int
    first_bad_seq: int | None = None
    problem: str = ""


def iter_records(engine: Engine, *, batch: int = 1000) -> Iterator[dict[str, Any]]:
    records = AuditRecord.__table__  # type: ignore[attr-defined]
    last = 0
    with engine.connect() as conn:
        while True:
            rows = (
                conn.execute(
                    select(records).where(records.c.seq > last).order_by(records.c.seq).limit(batch)
                )
                .mappings()
                .all()
            )
            if not rows:
                return
            for r in rows:
                yield dict(r)
            last = rows[-1]["seq"]


def verify_chain(engine: Engine) -> ChainVerdict:
    """Walk the chain; name the first record altered, removed or reordered."""
    prev, expected_seq, count = GENESIS, 1, 0
    for row in iter_records(engine):
        if row["seq"] != expected_seq:
            return ChainVerdict(False, count, expected_seq, "record missing or reordered")
        if row["prev_hash"] != prev:
            return ChainVerdict(False, count, row["seq"], "previous-hash link broken")
        if record_hash(row) != row["hash"]:
            return ChainVerdict(False, count, row["seq"], "record content altered")
        prev, expected_seq, count = row["hash"], expected_seq + 1, count + 1
    head = AuditHead.__table__  # type: ignore[attr-defined]
    with engine.connect() as conn:
        h = conn.execute(select(head.c.seq, head.c.hash).where(head.c.id == 1)).first()
    if h is not None and (h.seq != count or h.hash != prev):
        return ChainVerdict(
            False,
            count,
            count + 1 if h.seq > count else h.seq,
            "chain head does not match the last record (truncated)",
        )
    return ChainVerdict(True, count)
