"""The in-memory registry snapshot the hot path reads instead of the database (DESIGN §6).

Every registry write bumps ``registry_version`` and records what it changed
(``registry_changes``); a holder applies the changes since its version as a delta: it reloads
only the changed rows and makes a new snapshot that shares every other entry with the old one
(persistent maps), so a change costs the same at 10 agents as at 100,000. A full load happens
at start, on ``force``, and when the change log no longer reaches back to the holder's version.
A snapshot is immutable and swapped whole, so readers never see half an update.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import immutables
from sqlalchemy import Engine, Text, and_, cast
from sqlalchemy import select as select_columns
from sqlmodel import Session, col, select

from jwks.keys import AnyKey, import_public_jwk
from registry.bounds import NamespaceBounds
from registry.charter import Charter
from registry.issuers import IssuerView, load_issuer_views
from registry.models import (
    Agent,
    CharterVersion,
    Gateway,
    GatewayAuthMethod,
    RegistryChange,
    RegistryVersion,
    Status,
    TrustDomainRecord,
)
from registry.store import CHANGE_CHANNEL
from registry.tool_store import (
    NamespaceBoundRecord,
    bound_view,
    load_bounds,
    load_tool_view,
    load_tool_views,
)
from registry.tools import ToolView

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AgentView:
    spiffe_id: str
    owner: str
    status: Status
    enrollment_expires_at: float | None
    charter: Charter
    charter_version: int
    charter_hash: str

    def usable(self, now: float) -> bool:
        return self.status is Status.active and (
            self.enrollment_expires_at is None or now < self.enrollment_expires_at
        )


@dataclass(frozen=True, slots=True)
class GatewayView:
    client_id: str
    auth_method: GatewayAuthMethod
    status: Status
    agent_namespaces: tuple[str, ...]
    token_types: tuple[str, ...]
    keys: Mapping[str, AnyKey]  # kid -> public key, for private_key_jwt


@dataclass(frozen=True, slots=True)
class TrustDomainView:
    name: str
    source: str
    location: str | None
    bundle: str | None
    endpoint_profile: str | None = None
    endpoint_spiffe_id: str | None = None
    ca_file: str | None = None
    # the last good bundle a replica fetched (a start point, not part of the configuration)
    latest_bundle: str | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class RegistrySnapshot:
    version: int
    agents: Mapping[str, AgentView] = field(default_factory=lambda: MappingProxyType({}))
    gateways: Mapping[str, GatewayView] = field(default_factory=lambda: MappingProxyType({}))
    trust_domains: Mapping[str, TrustDomainView] = field(
        default_factory=lambda: MappingProxyType({})
    )
    # trusted user-token issuers (registry/issuers.py)
    issuers: Mapping[str, IssuerView] = field(default_factory=lambda: MappingProxyType({}))
    # tool metadata (registry/tools.py) by tool id, and the namespace bounds (registry/bounds.py)
    tools: Mapping[str, ToolView] = field(default_factory=lambda: MappingProxyType({}))
    bounds: NamespaceBounds = field(default_factory=NamespaceBounds)


def read_version(session: Session) -> int:
    row = session.get(RegistryVersion, 1)
    return row.version if row else 0


def _gateway_keys(jwks: dict[str, Any] | None) -> Mapping[str, AnyKey]:
    keys: dict[str, AnyKey] = {}
    for jwk in (jwks or {}).get("keys", []):
        kid = jwk.get("kid") if isinstance(jwk, dict) else None
        if kid:
            keys[kid] = import_public_jwk(jwk)
    return MappingProxyType(keys)


_AGENT_COLUMNS = (col(Agent.spiffe_id), col(Agent.owner), col(Agent.status),
                  col(Agent.enrollment_expires_at), col(Agent.charter_version),
                  col(CharterVersion.hash), col(CharterVersion.id))
_STATUS: dict[str, Status] = {s.value: s for s in Status}


def _agent_rows(session: Session, spiffe_id: str | None = None) -> list[Any]:
    """Each agent with its current charter's hash, as plain rows (no ORM objects, no charter
    document: a full load of 100,000 agents stays within a few seconds). An agent without a
    charter is left out: it can never be granted anything."""
    query = select_columns(*_AGENT_COLUMNS).join(CharterVersion, and_(
        col(CharterVersion.agent_spiffe_id) == col(Agent.spiffe_id),
        col(CharterVersion.version) == col(Agent.charter_version)))
    if spiffe_id is not None:
        query = query.where(col(Agent.spiffe_id) == spiffe_id)
    return list(session.execute(query))


def _parse_charters(session: Session, rows: list[Any], charters: dict[str, Charter]) -> None:
    """Parse each charter version not yet in ``charters`` once, by hash: agents enrolled from
    one template share one parsed ``Charter``."""
    wanted: dict[str, int] = {}
    for row in rows:
        if row[5] not in charters:
            wanted.setdefault(row[5], row[6])
    ids = list(wanted.values())
    for start in range(0, len(ids), 500):
        for digest, document in session.execute(
            select_columns(col(CharterVersion.hash), cast(col(CharterVersion.document), Text))
            .where(col(CharterVersion.id).in_(ids[start:start + 500]))
        ):
            charters[digest] = Charter.model_validate_json(document)


def _agent_view(row: Any, charters: dict[str, Charter]) -> AgentView:
    spiffe_id, owner, status, expires, version, digest, _ = row
    return AgentView(spiffe_id=spiffe_id, owner=owner, status=_STATUS[status],
                     enrollment_expires_at=expires, charter=charters[digest],
                     charter_version=version, charter_hash=digest)


def _gateway_view(g: Gateway) -> GatewayView:
    return GatewayView(
        client_id=g.client_id,
        auth_method=GatewayAuthMethod(g.auth_method),
        status=Status(g.status),
        agent_namespaces=tuple(g.agent_namespaces),
        token_types=tuple(g.token_types),
        keys=_gateway_keys(g.jwks),
    )


def _trust_domain_view(t: TrustDomainRecord) -> TrustDomainView:
    return TrustDomainView(t.name, str(t.source), t.location, t.bundle, t.endpoint_profile,
                           t.endpoint_spiffe_id, t.ca_file, t.latest_bundle)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """A full load allocates a few objects per registry row, none of them cyclic garbage;
    at 100,000 agents the collector's full passes over them would take most of the load."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def load_snapshot(session: Session) -> RegistrySnapshot:
    with _collector_paused():
        return _load_snapshot(session)


def _load_snapshot(session: Session) -> RegistrySnapshot:
    version = read_version(session)
    charters: dict[str, Charter] = {}
    rows = _agent_rows(session)
    _parse_charters(session, rows, charters)
    agents = {row[0]: _agent_view(row, charters) for row in rows}
    gateways = {g.client_id: _gateway_view(g) for g in session.exec(select(Gateway))}
    tds = {t.name: _trust_domain_view(t) for t in session.exec(select(TrustDomainRecord))}
    return RegistrySnapshot(
        version, immutables.Map(agents), immutables.Map(gateways), immutables.Map(tds),
        issuers=load_issuer_views(session),
        tools=immutables.Map(dict(load_tool_views(session))),
        bounds=load_bounds(session),
    )


def _put(mapping: Mapping[str, Any], key: str, value: Any | None) -> immutables.Map[str, Any]:
    base = mapping if isinstance(mapping, immutables.Map) else immutables.Map(dict(mapping))
    if value is not None:
        return base.set(key, value)
    return base.delete(key) if key in base else base


def apply_changes(
    snap: RegistrySnapshot, session: Session, changes: list[RegistryChange], version: int
) -> RegistrySnapshot | None:
    """``snap`` with ``changes`` applied: each changed row is read again as it is now. None
    when a change asks for a full reload."""
    agents, gateways, tds = snap.agents, snap.gateways, snap.trust_domains
    tools, bounds, issuers = snap.tools, snap.bounds, snap.issuers
    charters: dict[str, Charter] = {}
    for kind, key in dict.fromkeys((c.kind, c.key) for c in changes):
        if kind == "agent":
            rows = _agent_rows(session, key)
            _parse_charters(session, rows, charters)
            agents = _put(agents, key, _agent_view(rows[0], charters) if rows else None)
        elif kind == "gateway":
            g = session.get(Gateway, key)
            gateways = _put(gateways, key, None if g is None else _gateway_view(g))
        elif kind == "trust_domain":
            td = session.get(TrustDomainRecord, key)
            tds = _put(tds, key, None if td is None else _trust_domain_view(td))
        elif kind == "tool":
            tools = _put(tools, key, load_tool_view(session, key))
        elif kind == "bound":
            b = session.get(NamespaceBoundRecord, key)
            bounds = bounds.without(key) if b is None else bounds.with_bound(bound_view(b))
        elif kind == "issuer":
            issuers = load_issuer_views(session)  # a handful: read them all
        elif kind in ("revocation", "resource_server", "key"):
            continue  # not in the snapshot: the change hooks reload their own state
        else:
            return None
    return RegistrySnapshot(version, agents, gateways, tds, issuers=issuers, tools=tools,
                            bounds=bounds)


class SnapshotHolder:
    """Holds the current snapshot; ``current`` is a plain attribute read."""

    def __init__(
        self,
        engine: Engine,
        *,
        poll_interval_s: float = 1.0,
        on_change: Callable[[RegistrySnapshot], None] | None = None,
    ) -> None:
        self._engine = engine
        self._poll_interval_s = poll_interval_s
        self._on_change = on_change
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._listener: threading.Thread | None = None
        self._listening = threading.Event()
        self.current = RegistrySnapshot(version=-1)
        self.last_refresh_ok: float | None = None

    def refresh(self, *, force: bool = False) -> bool:
        """Rebuild the snapshot if the stored version moved. True if it changed."""
        # The hooks run under the lock too: a caller whose refresh finds the version
        # already taken by another thread returns only once that thread has applied it.
        with self._lock:
            with Session(self._engine) as session:
                version = read_version(session)
                current = self.current
                if not force and version == current.version:
                    self.last_refresh_ok = time.monotonic()
                    return False
                snap = None if force else self._delta(session, current, version)
                if snap is None:
                    snap = load_snapshot(session)
            self.current = snap
            self.last_refresh_ok = time.monotonic()
            if self._on_change is not None:
                self._on_change(snap)
        return True

    @staticmethod
    def _delta(session: Session, current: RegistrySnapshot,
               version: int) -> RegistrySnapshot | None:
        if current.version < 0 or version < current.version:
            return None
        changes = list(session.exec(
            select(RegistryChange)
            .where(col(RegistryChange.version) > current.version,
                   col(RegistryChange.version) <= version)
            .order_by(col(RegistryChange.version))))
        if len(changes) != version - current.version:
            return None  # the log no longer reaches back this far (pruned): full reload
        return apply_changes(current, session, changes, version)

    def wake(self) -> None:
        """Ask the poller to refresh now (a local write happened)."""
        self._wake.set()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="writ-snapshot", daemon=True)
            self._thread.start()
        if self._engine.dialect.name == "postgresql" and self._listener is None:
            self._listener = threading.Thread(
                target=self._listen, name="writ-snapshot-listen", daemon=True
            )
            self._listener.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._listener is not None:
            self._listener.join(timeout=5)
            self._listener = None

    def _listen(self) -> None:
        """PostgreSQL: LISTEN for registry changes and wake the refresher at once; the
        periodic poll stays as the full resync should a notification be missed."""
        import psycopg

        conninfo = self._engine.url.set(drivername="postgresql").render_as_string(
            hide_password=False
        )
        while not self._stop.is_set():
            try:
                with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {CHANGE_CHANNEL}")
                    self._listening.set()
                    self.wake()  # anything missed while not listening
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=0.5, stop_after=1):
                            self.wake()
            except Exception:
                log.warning("registry change listener lost its connection; retrying")
            finally:
                self._listening.clear()
            self._stop.wait(1.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._poll_interval_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.refresh()
            except Exception:  # database away: keep serving the last snapshot
                log.warning("registry snapshot refresh failed", exc_info=True)
