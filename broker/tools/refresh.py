"""Keeping fetched tool documents fresh, off the token path (DESIGN §6).

A thread on each replica looks at the tools of the current snapshot and re-fetches a
fetched (``url``) document once three quarters of its freshness has passed. A good fetch
is written back to the registry, which bumps ``registry_version``: every replica's
snapshot then carries the new document and its times, and the others need not fetch it
again. A failed fetch is not cached; it is retried with exponential backoff, and the last
good document keeps serving until its ``usable_until``, after which the token path refuses
the tool.

A fetched document that changes something security-relevant (``registry.tool_changes``) is
not adopted: the document in force keeps serving (its times move on, since its host
answered), the new one is held as pending, audited and counted
(``writ_tool_changes_held_total{change}``), and a registrar adopts it with
``approve_tool_change`` (``writ tools approve-change``,
``POST /v1/tools/{id}/approve-change``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import Counter
from sqlalchemy import Engine
from sqlmodel import Session

from broker.tools.fetch import ToolFetcher, ToolFetchError
from registry.errors import Conflict, NotFound
from registry.snapshot import SnapshotHolder
from registry.tool_changes import ToolChange, security_changes
from registry.tool_store import (
    ToolPublic,
    ToolSource,
    fetch_tool,
    hold_tool_change,
    update_tool_document,
)
from registry.tools import ToolDocument, ToolView

log = logging.getLogger(__name__)

#: Refresh once this share of a document's freshness has passed.
REFRESH_AT = 0.75
RETRY_FIRST_S = 5.0
RETRY_MAX_S = 300.0

#: (tool id, previous document hash, new document hash)
ChangeCallback = Callable[[str, str, str], None]
#: (tool id, held document hash, its security-relevant changes)
HeldCallback = Callable[[str, str, tuple[str, ...]], None]

TOOL_CHANGES_HELD = Counter("writ_tool_changes_held_total",
                            "Fetched tool documents held for approval, by change", ["change"])


@dataclass(frozen=True, slots=True)
class Refreshed:
    previous_hash: str
    tool: ToolPublic
    #: the security-relevant changes newly held for approval; empty when adopted (or
    #: when the same document was already held)
    held: tuple[str, ...] = ()


def refresh_tool(engine: Engine, fetcher: ToolFetcher, tool_id: str, *,
                 now: float) -> Refreshed:
    """Fetch a ``url`` tool again and store the result: adopted when harmless, else held
    for approval. Raises ``ToolFetchError``, ``NotFound`` or ``Conflict`` (pinned)."""
    with Session(engine) as session:
        current = fetch_tool(session, tool_id)
    if current is None:
        raise NotFound(f"no tool {tool_id}")
    if current.source is not ToolSource.url:
        raise Conflict(f"tool {tool_id} is pinned; replace its document instead")
    fetched = fetcher.fetch(tool_id)
    try:
        in_force = ToolDocument.model_validate(current.document)
    except ValueError:  # stored under looser rules: nothing to compare with, so held
        changes = [ToolChange.previous_unreadable.value]
    else:
        changes = [c.value for c in security_changes(in_force, fetched.document)]
    with Session(engine) as session:
        if not changes:
            row = update_tool_document(session, tool_id, fetched.document,
                                       times=fetched.times, now=now)
            session.commit()
            return Refreshed(current.document_hash, row)
        row, fresh = hold_tool_change(session, tool_id, fetched.document, changes,
                                      times=fetched.times, now=now)
        session.commit()
    if not fresh:
        return Refreshed(current.document_hash, row)
    for change in changes:
        TOOL_CHANGES_HELD.labels(change).inc()
    log.warning("tool metadata change held for approval",
                extra={"tool": tool_id, "changes": changes, "pending_hash": row.pending_hash})
    return Refreshed(current.document_hash, row, tuple(changes))


class ToolRefresher:
    def __init__(
        self,
        engine: Engine,
        fetcher: ToolFetcher,
        snapshots: SnapshotHolder,
        *,
        clock: Callable[[], float] = time.time,
        on_changed: ChangeCallback | None = None,
        on_held: HeldCallback | None = None,
        tick_s: float = 1.0,
    ) -> None:
        self._engine = engine
        self._fetcher = fetcher
        self._snapshots = snapshots
        self._clock = clock
        self._on_changed = on_changed
        self._on_held = on_held
        self._tick_s = tick_s
        self._failures: dict[str, int] = {}
        self._retry_at: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def due(tool: ToolView, now: float) -> bool:
        if tool.source != ToolSource.url.value:
            return False
        if tool.fetched_at is None or tool.fresh_until is None:
            return True
        return now >= tool.fetched_at + REFRESH_AT * (tool.fresh_until - tool.fetched_at)

    def run_once(self) -> list[str]:
        """Refresh every tool that is due and not backing off; return their ids."""
        now = self._clock()
        tools = self._snapshots.current.tools
        for gone in set(self._retry_at) - set(tools):
            self._retry_at.pop(gone, None)
            self._failures.pop(gone, None)
        refreshed = []
        for tool in list(tools.values()):
            if not self.due(tool, now) or now < self._retry_at.get(tool.tool_id, 0.0):
                continue
            try:
                result = refresh_tool(self._engine, self._fetcher, tool.tool_id, now=now)
            except (NotFound, Conflict):
                continue  # removed or re-pinned meanwhile
            except ToolFetchError as err:
                failures = self._failures.get(tool.tool_id, 0) + 1
                self._failures[tool.tool_id] = failures
                self._retry_at[tool.tool_id] = now + min(
                    RETRY_FIRST_S * 2 ** (failures - 1), RETRY_MAX_S)
                log.warning("tool metadata refresh failed", extra={
                    "tool": tool.tool_id, "reason": err.reason, "failures": failures})
                continue
            self._failures.pop(tool.tool_id, None)
            self._retry_at.pop(tool.tool_id, None)
            refreshed.append(tool.tool_id)
            before, row = result.previous_hash, result.tool
            if before != row.document_hash and self._on_changed is not None:
                self._on_changed(tool.tool_id, before, row.document_hash)
            if result.held and self._on_held is not None and row.pending_hash is not None:
                self._on_held(tool.tool_id, row.pending_hash, result.held)
        if refreshed:
            self._snapshots.refresh()  # this replica at once; the others are notified
        return refreshed

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="writ-tool-refresh",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self._tick_s):
            try:
                self.run_once()
            except Exception:  # the database away: try again at the next tick
                log.warning("tool metadata refresh pass failed", exc_info=True)
