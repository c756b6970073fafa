"""The in-memory registry snapshot the hot path reads instead of the database (DESIGN §6).

Every registry write bumps ``registry_version``; a holder rebuilds its snapshot when the
version moves (a cheap poll of one row; ``wake()`` refreshes at once after a local write).
A snapshot is immutable and swapped whole, so readers never see half an update.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, select

from jwks.keys import AnyKey, import_public_jwk
from registry.bounds import NamespaceBounds
from registry.charter import Charter
from registry.issuers import IssuerView, load_issuer_views
from registry.models import (
    Agent,
    CharterVersion,
    Gateway,
    GatewayAuthMethod,
    RegistryVersion,
    Status,
    TrustDomainRecord,
)
from registry.store import CHANGE_CHANNEL
from registry.tool_store import load_bounds, load_tool_views
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


def load_snapshot(session: Session) -> RegistrySnapshot:
    version = read_version(session)
    charters = {(c.agent_spiffe_id, c.version): c for c in session.exec(select(CharterVersion))}
    agents: dict[str, AgentView] = {}
    for a in session.exec(select(Agent)):
        cv = charters.get((a.spiffe_id, a.charter_version))
        if cv is None:
            continue  # an agent without a charter can never be granted anything
        agents[a.spiffe_id] = AgentView(
            spiffe_id=a.spiffe_id,
            owner=a.owner,
            status=Status(a.status),
            enrollment_expires_at=a.enrollment_expires_at,
            charter=Charter.model_validate(cv.document),
            charter_version=cv.version,
            charter_hash=cv.hash,
        )
    gateways = {
        g.client_id: GatewayView(
            client_id=g.client_id,
            auth_method=GatewayAuthMethod(g.auth_method),
            status=Status(g.status),
            agent_namespaces=tuple(g.agent_namespaces),
            token_types=tuple(g.token_types),
            keys=_gateway_keys(g.jwks),
        )
        for g in session.exec(select(Gateway))
    }
    tds = {
        t.name: TrustDomainView(t.name, str(t.source), t.location, t.bundle,
                                t.endpoint_profile, t.endpoint_spiffe_id, t.ca_file,
                                t.latest_bundle)
        for t in session.exec(select(TrustDomainRecord))
    }
    return RegistrySnapshot(
        version, MappingProxyType(agents), MappingProxyType(gateways), MappingProxyType(tds),
        issuers=load_issuer_views(session),
        tools=load_tool_views(session),
        bounds=load_bounds(session),
    )


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
                if not force and version == self.current.version:
                    self.last_refresh_ok = time.monotonic()
                    return False
                snap = load_snapshot(session)
            self.current = snap
            self.last_refresh_ok = time.monotonic()
            if self._on_change is not None:
                self._on_change(snap)
        return True

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
