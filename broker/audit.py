"""Tamper-evident audit trail with group commit (DESIGN §6-7).

Every record carries the hash of the one before it. One writer thread per process takes
the records waiting, locks the chain head row (which serialises writers across replicas),
appends the batch in one transaction and commits; each request waits until its record is
durable before the response is sent. Records hold token fingerprints, never tokens.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from typing import Any

from sqlalchemy import JSON, Column, Engine, select
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


# a waiter: a thread's future, or an event loop's future settled on that loop
_Waiter = concurrent.futures.Future[int] | tuple[asyncio.AbstractEventLoop, "asyncio.Future[int]"]
_COLUMNS = (*(f.name for f in fields(AuditEvent)), "seq", "at", "prev_hash", "hash")


def _settle(waiters: list[tuple[asyncio.Future[int], int | BaseException]]) -> None:
    """Runs on the waiters' event loop: one wake-up per batch, not one per record."""
    for fut, outcome in waiters:
        if fut.done():  # timed out meanwhile
            continue
        if isinstance(outcome, BaseException):
            fut.set_exception(outcome)
        else:
            fut.set_result(outcome)


class AuditWriter:
    """One writer thread per process, with its own database connection: it takes the
    records waiting, appends them in one transaction and settles their waiters together."""

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
        self._queue: queue.SimpleQueue[tuple[AuditEvent, _Waiter] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._dbapi: Any = None  # the writer thread's own connection, kept between batches
        self._fresh = False
        self._sql = _statements(engine.dialect.name, engine.dialect.paramstyle)
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
        if self._thread is None:
            raise AuditUnavailable("audit writer is not running")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        self._queue.put((event, (loop, fut)))
        try:
            async with asyncio.timeout(self._timeout):
                return await fut
        except TimeoutError as err:
            raise AuditUnavailable("audit write timed out") from err

    def record_sync(self, event: AuditEvent) -> int:
        try:
            return self.submit(event).result(self._timeout)
        except concurrent.futures.TimeoutError as err:
            raise AuditUnavailable("audit write timed out") from err

    def _run(self) -> None:
        stopping = False
        try:
            while not stopping:
                item = self._queue.get()
                if item is None:
                    break
                if self._batch_wait > 0 and self._queue.qsize() < self._batch_max:
                    # let the batch fill: one sleep, not one wake-up per record arriving
                    time.sleep(self._batch_wait)
                batch = [item]
                while len(batch) < self._batch_max:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        stopping = True
                        break
                    batch.append(nxt)
                self._write(batch)
        finally:
            self._close_connection()

    def _write(self, batch: list[tuple[AuditEvent, _Waiter]]) -> None:
        outcomes: list[int | BaseException]
        try:
            outcomes = list(self._append([e for e, _ in batch]))
        except Exception as err:
            log.error("audit batch of %d failed: %s", len(batch), type(err).__name__)
            outcomes = [AuditUnavailable("audit store unavailable") for _ in batch]
        else:
            self.batches += 1
            self.records += len(batch)
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[int], Any]]] = {}
        for (_, waiter), outcome in zip(batch, outcomes, strict=True):
            if isinstance(waiter, concurrent.futures.Future):
                if isinstance(outcome, BaseException):
                    waiter.set_exception(outcome)
                else:
                    waiter.set_result(outcome)
            else:
                by_loop.setdefault(waiter[0], []).append((waiter[1], outcome))
        for loop, waiters in by_loop.items():
            # RuntimeError: that loop has closed, so nobody waits any more
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, waiters)

    def _connection(self) -> Any:
        if self._dbapi is None:
            self._dbapi = self._engine.raw_connection()
            self._fresh = True  # just opened: a failure on it is no stale connection
        return self._dbapi

    def _close_connection(self, *, broken: bool = False) -> None:
        conn, self._dbapi = self._dbapi, None
        if conn is None:
            return
        try:
            if broken:
                conn.invalidate()  # never reused: the next batch opens a new connection
            else:
                conn.close()  # back to the pool
        except Exception:
            log.warning("audit connection could not be released cleanly")

    def _append(self, events: list[AuditEvent]) -> list[int]:
        try:
            return self._append_once(events)
        except _NotCommitted as err:
            # the kept connection had gone stale (database restarted, idle timeout) and
            # nothing was written: try once more on a fresh one
            log.info("audit connection lost before commit (%s); reconnecting",
                     type(err.__cause__).__name__)
            try:
                return self._append_once(events)
            except _NotCommitted as again:
                raise again.__cause__ or again from None

    def _append_once(self, events: list[AuditEvent]) -> list[int]:
        sql = self._sql
        now = self._clock()
        committing = False
        try:
            conn = self._connection()
            cur = conn.cursor()
            if sql.begin:
                cur.execute(sql.begin)
            # Writing the head row first takes its lock (row lock on PostgreSQL, the write
            # lock on SQLite), so concurrent writers append one batch at a time.
            cur.execute(sql.lock_head)
            head = cur.fetchone()
            if head is None:
                cur.execute(sql.create_head, (GENESIS,))
                cur.execute(sql.lock_head)
                head = cur.fetchone()
            seq, prev = int(head[0]), str(head[1])
            rows = []
            for e in events:
                seq += 1
                row = {f: getattr(e, f) for f in _EVENT_FIELDS}
                row.update(seq=seq, at=now, prev_hash=prev)
                row["hash"] = prev = record_hash(row)
                row["detail"] = json.dumps(row["detail"])  # what SQLAlchemy's JSON stores
                rows.append(tuple(row[c] for c in _COLUMNS))
            cur.executemany(sql.insert, rows)
            cur.execute(sql.update_head, (seq, prev))
            cur.close()
            committing = True
            conn.commit()
        except Exception as err:
            self._close_connection(broken=True)
            if committing or self._fresh:
                raise  # a failed commit may or may not have landed: never write it twice
            raise _NotCommitted() from err
        finally:
            self._fresh = False
        first = seq - len(events) + 1
        return list(range(first, seq + 1))


class _NotCommitted(Exception):
    """A batch failed on a kept connection before its commit: nothing was written."""


_EVENT_FIELDS = tuple(f.name for f in fields(AuditEvent))


@dataclass(frozen=True, slots=True)
class _Statements:
    begin: str | None
    lock_head: str
    create_head: str
    insert: str
    update_head: str


def _statements(dialect: str, paramstyle: str) -> _Statements:
    """The writer's SQL, written once per engine in the driver's own parameter style."""
    mark = "?" if paramstyle == "qmark" else "%s"
    columns = ", ".join(_COLUMNS)
    # built from constants only; every value travels as a bound parameter
    return _Statements(
        # SQLite: take the write lock before reading the head
        begin="BEGIN IMMEDIATE" if dialect == "sqlite" else None,
        lock_head="UPDATE audit_head SET seq = seq WHERE id = 1 RETURNING seq, hash",
        create_head=f"INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, {mark}) "  # noqa: S608
        "ON CONFLICT (id) DO NOTHING",
        insert=f"INSERT INTO audit_records ({columns}) "  # noqa: S608
        f"VALUES ({', '.join(mark for _ in _COLUMNS)})",
        update_head=f"UPDATE audit_head SET seq = {mark}, hash = {mark} WHERE id = 1",  # noqa: S608
    )


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
