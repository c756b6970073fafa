"""Tamper-evident audit trail with group commit (DESIGN §6-7).

Every record carries the hash of the one before it. Each process's writer takes the records
of one event-loop turn, moves the chain head row (whose lock serialises writers across
replicas), appends the batch in one transaction and commits; each request waits until its
record is durable before the response is sent. Records hold token fingerprints, never tokens.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field, fields
from typing import Any

import psycopg
import psycopg.errors
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


# canonical form of a hashed record: sorted keys, no spaces, UTF-8 (one encoder, reused)
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def record_hash(row: dict[str, Any]) -> str:
    body = _CANONICAL.encode({k: row[k] for k in _HASHED})
    return hashlib.sha256(body.encode()).hexdigest()


class AuditUnavailable(Exception):
    """The record could not be made durable; the caller must not answer with a token."""


_COLUMNS = (*(f.name for f in fields(AuditEvent)), "seq", "at", "prev_hash", "hash")
_Waiting = tuple[AuditEvent, "asyncio.Future[int]"]  # a record and its request
# one append, as statements: (sql, params, what the cursor answers) in, rowcount or row back
_Plan = Generator[tuple[str, Any, str], Any, tuple[int, str]]


class AuditWriter:
    """Appends records to the chain on one kept database connection.

    ``record`` (the token path) groups the records of one event-loop turn: the first one
    schedules a flush, every request reaching its audit step in the same turn joins it, and
    the flush appends the whole batch in one transaction and commits on the loop's own
    thread before any of them is answered. No second thread takes part, so no request pays
    for a hand-over of the GIL. ``record_sync`` (admin changes, background threads, the CLI)
    appends one record in its caller's thread. A lock keeps batches one at a time.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        batch_max: int = 256,
        batch_wait_ms: float = 0.0,
        timeout_s: float = 5.0,
        stall_s: float = 0.75,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        # the longest a commit may hold the event loop's thread (PostgreSQL): past it the
        # connection is cut and the batch fails (503), so liveness never waits on a hung
        # database; opening a connection never happens on the loop's thread at all
        self._stall = min(stall_s, timeout_s)
        self._armed: tuple[float, int] | None = None  # (deadline, socket) of an on-loop commit
        self._on_loop = False
        self._watchdog: threading.Thread | None = None
        self._batch_max = batch_max
        self._batch_wait = batch_wait_ms / 1000.0
        self._timeout = timeout_s
        self._clock = clock
        self._running = False
        self._lock = threading.Lock()  # the kept connection and the chain head it knows
        self._pending: dict[asyncio.AbstractEventLoop, list[_Waiting]] = {}
        self._busy_since: dict[asyncio.AbstractEventLoop, float] = {}
        self._dbapi: Any = None  # kept between batches
        self._fresh = False
        self._dialect = engine.dialect.name
        self._sql = _statements(engine.dialect.paramstyle, self._dialect)
        self._inserts: dict[int, str] = {}  # multi-row INSERT text by row count
        self._head: tuple[int, str] | None = None  # where this writer's last batch ended
        self.batches = 0
        self.records = 0

    def start(self) -> None:
        self._running = True
        if self._dialect == "postgresql" and self._watchdog is None:
            self._watchdog = threading.Thread(target=self._watch, name="writ-audit-watchdog",
                                              daemon=True)
            self._watchdog.start()

    def stop(self) -> None:
        self._running = False
        if self._watchdog is not None:
            self._watchdog.join(timeout=1)
            self._watchdog = None
        if self._lock.acquire(timeout=self._timeout):
            try:
                self._close_connection()
            finally:
                self._lock.release()

    async def record(self, event: AuditEvent) -> int:
        """Append ``event`` and wait until it is durable; returns its sequence number."""
        if not self._running:
            raise AuditUnavailable("audit writer is not running")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        pending = self._pending.get(loop)
        if pending is None:
            pending = self._pending[loop] = []
            if self._batch_wait > 0:
                loop.call_later(self._batch_wait, self._flush, loop)
            else:
                loop.call_soon(self._flush, loop)
        pending.append((event, fut))
        # no timer of its own: the flush always runs, and every wait inside it (the lock,
        # the database's lock and statement timeouts) is bounded by the audit timeout
        return await fut

    def record_sync(self, event: AuditEvent) -> int:
        """Append ``event`` from a thread (never from the event loop's hot path)."""
        if not self._running:
            raise AuditUnavailable("audit writer is not running")
        (outcome,) = self._write([event])
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        """Runs on ``loop``: commit the turn's records, then settle their requests."""
        waiting = self._pending[loop]
        while waiting:
            if self._dialect == "postgresql" and self._dbapi is None:
                self._flush_off_loop(loop)
                return
            chunk = waiting[: self._batch_max]
            self._on_loop = True
            try:
                outcomes = self._try_write([e for e, _ in chunk])
            except _Reconnect:
                continue  # nothing was written; the connection is gone: off the loop
            finally:
                self._on_loop = False
            if outcomes is None:
                # another process holds the write lock: keep serving and try again shortly;
                # records arriving meanwhile join this batch
                since = self._busy_since.setdefault(loop, time.monotonic())
                if time.monotonic() - since < self._timeout:
                    loop.call_later(_BUSY_RETRY_S, self._flush, loop)
                    return
                outcomes = [AuditUnavailable("audit write timed out") for _ in chunk]
            self._busy_since.pop(loop, None)
            del waiting[: len(chunk)]
            _settle(chunk, outcomes)
        del self._pending[loop]

    def _flush_off_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """(Re)connecting waits on the network: the turn's records go to a thread, which
        opens the connection and appends them; the loop goes on serving meanwhile. Their
        requests still get an answer within the audit timeout: past it they fail (503), and
        a chunk not yet begun is then not written. A chunk the thread had begun may still
        land: a record without its token, never a token without its record."""
        waiting = self._pending.pop(loop)
        self._busy_since.pop(loop, None)
        expired = threading.Event()

        def write_all() -> list[int | BaseException]:
            outcomes: list[int | BaseException] = []
            for start in range(0, len(waiting), self._batch_max):
                chunk = [e for e, _ in waiting[start:start + self._batch_max]]
                if expired.is_set():
                    outcomes += [AuditUnavailable("audit write timed out") for _ in chunk]
                else:
                    outcomes += self._write(chunk)
            return outcomes

        def settle(done: asyncio.Future[list[int | BaseException]]) -> None:
            failed = done.exception() is not None
            _settle(waiting, [AuditUnavailable("audit store unavailable")] * len(waiting)
                    if failed else done.result())

        def expire() -> None:
            expired.set()
            _settle(waiting, [AuditUnavailable("audit write timed out")] * len(waiting))

        loop.run_in_executor(None, write_all).add_done_callback(settle)
        loop.call_later(self._timeout, expire)

    def _watch(self) -> None:
        """Cut the connection of an on-loop commit that outlives its stall bound: the blocked
        call then fails at once and the loop's thread is free again."""
        while self._running:
            armed = self._armed
            if armed is not None and time.monotonic() >= armed[0]:
                self._armed = None
                log.error("audit commit stalled past %.2fs; cutting its connection",
                          self._stall)
                try:
                    with socket.socket(fileno=os.dup(armed[1])) as sock:
                        sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            time.sleep(0.05)

    def _counted(self, outcomes: list[int | BaseException]) -> list[int | BaseException]:
        if outcomes and not isinstance(outcomes[0], BaseException):
            self.batches += 1
            self.records += len(outcomes)
        return outcomes

    def _write(self, events: list[AuditEvent]) -> list[int | BaseException]:
        """From a thread: wait for the write lock (up to the audit timeout), then append."""
        deadline = time.monotonic() + self._timeout
        while (outcomes := self._try_write(events)) is None:
            if time.monotonic() >= deadline:
                return [AuditUnavailable("audit write timed out") for _ in events]
            time.sleep(_BUSY_RETRY_S)
        return outcomes

    def _try_write(self, events: list[AuditEvent]) -> list[int | BaseException] | None:
        """Append ``events``; ``None`` when another writer holds the lock (nothing written)."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            seqs = self._append(events)
        except _Busy:
            return None
        except _Reconnect:
            raise
        except Exception as err:
            log.error("audit batch of %d failed: %s", len(events), type(err).__name__)
            return [AuditUnavailable("audit store unavailable") for _ in events]
        finally:
            self._lock.release()
        return self._counted(list(seqs))

    def _insert_sql(self, count: int) -> str:
        text = self._inserts.get(count)
        if text is None:
            text = self._inserts[count] = self._sql.insert + ", ".join(
                [self._sql.values] * count
            )
        return text

    def _connection(self) -> Any:
        if self._dbapi is None:
            self._dbapi = self._engine.raw_connection()
            self._fresh = True  # just opened: a failure on it is no stale connection
            # the commit runs on the event loop's thread: bound every wait by the audit
            # timeout, so a stuck database fails the batch (503) instead of the process
            ms = max(1, int(self._timeout * 1000))
            cur = self._dbapi.cursor()
            if self._dialect == "postgresql":
                cur.execute(f"SET statement_timeout = {ms}")
                cur.execute(f"SET lock_timeout = {ms}")
                self._dbapi.commit()
            elif self._dialect == "sqlite":
                # never sleep in SQLite's busy handler (1 ms and up, on the event loop's
                # thread): a locked database is retried by _flush while the loop serves
                cur.execute("PRAGMA busy_timeout = 0")
            cur.close()
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
            # nothing was written: try once more on a fresh one, never opened on the loop
            if self._on_loop:
                raise _Reconnect() from err
            log.info("audit connection lost before commit (%s); reconnecting",
                     type(err.__cause__).__name__)
            try:
                return self._append_once(events)
            except _NotCommitted as again:
                raise again.__cause__ or again from None

    def _append_once(self, events: list[AuditEvent]) -> list[int]:
        committing = False
        try:
            conn = self._connection()
            if self._on_loop and self._dialect == "postgresql":
                self._armed = (time.monotonic() + self._stall, conn.driver_connection.fileno())
            cur = conn.cursor()
            if self._dialect == "sqlite":  # take the write lock first, without waiting
                try:
                    cur.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError as err:
                    if err.sqlite_errorcode in _SQLITE_BUSY:
                        cur.close()
                        raise _Busy() from err
                    raise
            # PostgreSQL: always the locked path, whose NOWAIT never waits for the row lock
            plan = self._plan(events, None if self._dialect == "postgresql" else self._head)
            answer: Any = None
            try:
                while True:
                    text, params, want = plan.send(answer)
                    try:
                        if want == "copy":
                            with cur.copy(text) as copy:
                                for row in params:
                                    copy.write_row(row)
                        else:
                            cur.execute(text, params)
                    except psycopg.errors.LockNotAvailable as err:  # FOR UPDATE NOWAIT
                        cur.close()
                        conn.rollback()
                        raise _Busy() from err
                    answer = cur.rowcount if want == "rowcount" else (
                        cur.fetchone() if want == "row" else None)
            except StopIteration as done:
                new_head: tuple[int, str] = done.value
            cur.close()
            committing = True
            conn.commit()
        except _Busy:
            raise  # nothing began: the connection and the known head stay good
        except Exception as err:
            self._head = None
            self._close_connection(broken=True)
            if committing or self._fresh:
                raise  # a failed commit may or may not have landed: never write it twice
            raise _NotCommitted() from err
        finally:
            self._fresh = False
            self._armed = None
        self._head = new_head
        return _seqs(new_head, len(events))

    def _plan(self, events: list[AuditEvent], head: tuple[int, str] | None) -> _Plan:
        """The statements that append ``events`` in the open transaction, whatever drives
        them: each step yields ``(sql, params, want)`` and receives the cursor's rowcount
        (``want`` "rowcount"), one row ("row") or nothing; "copy" streams ``params``, a list
        of rows, through the statement. Returns the new chain head."""
        sql = self._sql
        now = self._clock()
        rows: list[tuple[Any, ...]] = []
        if head is not None:
            # Fast path: the chain still ends where this writer left it. Moving the head row
            # first takes its lock (row lock on PostgreSQL, the write lock on SQLite), so
            # concurrent writers append one batch at a time.
            rows, new_head = _chain(events, head, now)
            if (yield sql.advance_head, (*new_head, *head), "rowcount") != 1:
                rows = []  # another writer appended meanwhile
        if not rows:
            found = yield sql.lock_head, (), "row"
            if found is None:
                yield sql.create_head, (GENESIS,), ""
                found = yield sql.lock_head, (), "row"
            rows, new_head = _chain(events, (int(found[0]), str(found[1])), now)
            yield sql.update_head, new_head, ""
        if sql.copy:
            # PostgreSQL: COPY the batch, no statement text or bound parameters to build
            yield sql.copy, rows, "copy"
            return new_head
        # one statement per 1000 rows (bound-parameter limits): one round trip, not one per row
        for i in range(0, len(rows), _ROWS_PER_INSERT):
            chunk = rows[i : i + _ROWS_PER_INSERT]
            yield self._insert_sql(len(chunk)), [v for row in chunk for v in row], ""
        return new_head


def _settle(waiting: list[_Waiting],
            outcomes: list[int | BaseException]) -> None:
    for (_, fut), outcome in zip(waiting, outcomes, strict=True):
        if fut.done():  # its request was cancelled meanwhile
            continue
        if isinstance(outcome, BaseException):
            fut.set_exception(outcome)
        else:
            fut.set_result(outcome)


def _seqs(head: tuple[int, str], count: int) -> list[int]:
    """The sequence numbers of the last ``count`` records before ``head``."""
    return list(range(head[0] - count + 1, head[0] + 1))


def _chain(
    events: list[AuditEvent], head: tuple[int, str], now: float
) -> tuple[list[tuple[Any, ...]], tuple[int, str]]:
    """The rows of ``events`` chained after ``head``, and the new head."""
    seq, prev = head
    rows = []
    for e in events:
        seq += 1
        row = {f: getattr(e, f) for f in _HASHED_EVENT_FIELDS}
        row.update(seq=seq, at=now, prev_hash=prev)
        prev = hashlib.sha256(_CANONICAL.encode(row).encode()).hexdigest()  # record_hash
        # column order (_COLUMNS); detail as SQLAlchemy's JSON type stores it
        rows.append((*(row[f] for f in _PLAIN_FIELDS), json.dumps(e.detail), seq, now,
                     row["prev_hash"], prev))
    return rows, (seq, prev)


class _Busy(Exception):
    """Another writer holds the database's write lock; nothing was written."""


_SQLITE_BUSY = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
_BUSY_RETRY_S = 0.0002


class _NotCommitted(Exception):
    """A batch failed on a kept connection before its commit: nothing was written."""


class _Reconnect(Exception):
    """On the loop: the kept connection is gone and nothing was written; the batch goes to a
    thread, which opens a new one."""


_EVENT_FIELDS = tuple(f.name for f in fields(AuditEvent))
_HASHED_EVENT_FIELDS = tuple(f for f in _EVENT_FIELDS if f in _HASHED)
_PLAIN_FIELDS = _EVENT_FIELDS[:-1]  # every event field but detail, which is last
_ROWS_PER_INSERT = 1000  # x 15 columns: under SQLite's 32 766 and PostgreSQL's 65 535


@dataclass(frozen=True, slots=True)
class _Statements:
    advance_head: str
    lock_head: str
    create_head: str
    insert: str
    copy: str  # PostgreSQL's COPY of a batch; empty where there is none
    values: str
    update_head: str


def _statements(paramstyle: str, dialect: str) -> _Statements:
    """The writer's SQL, written once per engine in the driver's own parameter style."""
    mark = "?" if paramstyle == "qmark" else "%s"
    # SQLite: BEGIN IMMEDIATE already holds the database's write lock. PostgreSQL: lock the
    # head row, or fail at once (55P03) when another writer holds it, and try again later.
    lock_head = ("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE NOWAIT"
                 if dialect == "postgresql"
                 else "UPDATE audit_head SET seq = seq WHERE id = 1 RETURNING seq, hash")
    columns = ", ".join(_COLUMNS)
    # built from constants only; every value travels as a bound parameter
    return _Statements(
        advance_head=f"UPDATE audit_head SET seq = {mark}, hash = {mark} "  # noqa: S608
        f"WHERE id = 1 AND seq = {mark} AND hash = {mark}",
        lock_head=lock_head,
        create_head=f"INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, {mark}) "  # noqa: S608
        "ON CONFLICT (id) DO NOTHING",
        insert=f"INSERT INTO audit_records ({columns}) VALUES ",  # noqa: S608
        copy=f"COPY audit_records ({columns}) FROM STDIN" if dialect == "postgresql" else "",
        values=f"({', '.join(mark for _ in _COLUMNS)})",
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
