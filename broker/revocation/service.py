"""Revocation, the kill switch and introspection, wired onto the runtime (``broker.runtime``).

- After every registry refresh (``broker.change_hooks``) the revocation set and the resource
  servers are reloaded from the database; a write anywhere bumps ``registry_version``, so
  every replica follows within the snapshot's bound (PostgreSQL NOTIFY, else the poll).
- A reload that fails (database away) is retried every second until it succeeds.
- Once a minute, entries whose tokens have all expired are pruned, and so are retired
  signing keys whose publication has ended; each prune is an audit record.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Engine
from sqlmodel import Session

from broker.audit.writer import AuditEvent, AuditWriter
from broker.auth.clients import (
    JWT_BEARER,
    JWT_SPIFFE,
    ClientAuthenticator,
    JwtSpiffeAuth,
    PrivateKeyJwtAuth,
)
from broker.auth.resource_servers import ResourceServerSet, load_views
from broker.auth.svid import SvidValidator
from broker.revocation.introspection import TokenInspector
from broker.revocation.revoked import RevocationEntry, RevocationKind, RevocationSet
from broker.revocation.store import (
    RevocationCreate,
    RevocationPublic,
    create_revocation,
    load_live,
    prune_revocations,
)
from broker.settings import Settings
from broker.signing.keyring import KeyRing
from registry import store
from registry.errors import NotFound
from registry.models import Status
from registry.snapshot import RegistrySnapshot, SnapshotHolder

log = logging.getLogger("writ.revocation")

PRUNE_INTERVAL_S = 60.0
RETRY_INTERVAL_S = 1.0


@dataclass(frozen=True, slots=True)
class Revoked:
    revocation: RevocationPublic
    #: the agent or gateway this revocation suspended (kill switch), if any
    suspended: str | None


class Host(Protocol):
    """What the service needs of the runtime (``broker.runtime.Broker`` is one)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def clock(self) -> Callable[[], float]: ...
    @property
    def engine(self) -> Engine: ...
    @property
    def issuer(self) -> str: ...
    @property
    def keyring(self) -> KeyRing: ...
    @property
    def svids(self) -> SvidValidator: ...
    @property
    def clients(self) -> ClientAuthenticator: ...
    @property
    def revocations(self) -> RevocationSet: ...
    @property
    def audit(self) -> AuditWriter: ...
    @property
    def snapshots(self) -> SnapshotHolder: ...
    @property
    def change_hooks(self) -> list[Callable[[RegistrySnapshot], None]]: ...


class RevocationService:
    def __init__(self, broker: Host) -> None:
        self.broker = broker
        settings = broker.settings
        self.max_token_ttl_s = float(settings.keys.max_token_ttl_s)
        self.resource_servers = ResourceServerSet()
        self.inspector = TokenInspector(
            broker.keyring,
            broker.revocations,
            issuer=broker.issuer,
            max_token_bytes=settings.max_token_bytes,
            leeway_s=settings.svid_leeway_s,
        )
        # resource servers authenticate as gateways do, against their own registrations;
        # RFC 7523 §3: an assertion's aud may name the endpoint it is sent to
        token_pkjwt = broker.clients.method(JWT_BEARER)
        if not isinstance(token_pkjwt, PrivateKeyJwtAuth):  # pragma: no cover - wiring
            raise TypeError("the token endpoint has no private_key_jwt method")
        issuer = broker.issuer
        self.introspect_clients = ClientAuthenticator(
            {
                JWT_SPIFFE: JwtSpiffeAuth(broker.svids, issuer),
                JWT_BEARER: token_pkjwt.for_audiences((issuer, f"{issuer}/introspect")),
            }
        )
        # gateways at /revoke: as at /token, with <issuer>/revoke as the endpoint audience
        # (authlib's revoke_token sends it)
        self.revoke_clients = ClientAuthenticator(
            {
                JWT_SPIFFE: JwtSpiffeAuth(broker.svids, issuer),
                JWT_BEARER: token_pkjwt.for_audiences((issuer, f"{issuer}/revoke")),
            }
        )
        self._stale = threading.Event()
        self._reload_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # first, so a failing hook added later cannot hold revocations back
        broker.change_hooks.insert(0, self._on_registry_change)

    # --- in-memory state -----------------------------------------------------------------

    def _on_registry_change(self, _snap: RegistrySnapshot) -> None:
        try:
            self.reload()
        except Exception as err:  # retried by the housekeeping thread
            self._stale.set()
            log.warning("revocation reload failed: %s", type(err).__name__)

    def reload(self) -> None:
        """Read the live revocations and the resource servers; swap them in whole."""
        with self._reload_lock, Session(self.broker.engine) as session:
            entries = load_live(session, now=self.broker.clock())
            views = load_views(session)
            self.broker.revocations.replace(entries)
            self.resource_servers.replace(views)
            self._stale.clear()
        try:
            # a rotation elsewhere bumps the registry version too: follow it now
            self.broker.keyring.refresh_if_changed()
        except Exception as err:
            log.warning("signing key refresh failed: %s", type(err).__name__)

    # --- writes --------------------------------------------------------------------------

    def revoke(
        self,
        data: RevocationCreate,
        *,
        by: str,
        suspend: bool = True,
        token_exp: float | None = None,
    ) -> Revoked:
        """Store the revocation (and, for an agent or gateway with ``suspend``, the kill
        switch: its suspension) in one transaction, then apply it here at once."""
        revoked = store_revocation(
            self.broker.engine, data, now=self.broker.clock(), by=by, suspend=suspend,
            max_token_ttl_s=self.max_token_ttl_s, token_exp=token_exp,
        )
        row = revoked.revocation
        self.broker.revocations.add(
            RevocationEntry(row.kind, row.value, row.revoked_at, row.expires_at)
        )
        try:
            self.broker.snapshots.refresh()  # the suspension applies here at once
        except Exception as err:
            log.warning("snapshot refresh after revocation failed: %s", type(err).__name__)
        return revoked

    # --- housekeeping --------------------------------------------------------------------

    def prune(self) -> dict[str, Any]:
        """Drop revocations whose tokens have all expired and retired keys no longer
        published; audit what went."""
        now = self.broker.clock()
        with Session(self.broker.engine) as session:
            pruned = prune_revocations(session, now=now)
            session.commit()
        kids = self.broker.keyring.prune()
        if pruned:
            self.broker.audit.record_sync(
                AuditEvent(kind="revocation", decision="changed", reason="revocations.pruned",
                           detail={"count": pruned, "by": "housekeeping"})
            )
        if kids:
            self.broker.audit.record_sync(
                AuditEvent(kind="key", decision="changed", reason="keys.pruned",
                           detail={"kids": kids, "by": "housekeeping"})
            )
        return {"revocations": pruned, "keys": kids}

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="writ-revocation",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        since_prune = 0.0
        while not self._stop.wait(RETRY_INTERVAL_S):
            since_prune += RETRY_INTERVAL_S
            if self._stale.is_set():
                try:
                    self.reload()
                except Exception as err:
                    log.warning("revocation reload failed: %s", type(err).__name__)
            if since_prune >= PRUNE_INTERVAL_S:
                since_prune = 0.0
                try:
                    self.prune()
                except Exception as err:
                    log.warning("pruning failed: %s", type(err).__name__)


def store_revocation(
    engine: Engine,
    data: RevocationCreate,
    *,
    now: float,
    by: str,
    suspend: bool,
    max_token_ttl_s: float,
    token_exp: float | None = None,
) -> Revoked:
    """One transaction: the revocation, and the kill switch's suspension with ``suspend``."""
    suspended = None
    with Session(engine) as session:
        row = create_revocation(session, data, now=now, by=by, max_token_ttl_s=max_token_ttl_s,
                                token_exp=token_exp)
        if suspend:
            suspended = _suspend(session, data.kind, data.value, now=now)
        session.commit()
    return Revoked(row, suspended)


def _suspend(session: Session, kind: RevocationKind, value: str, *, now: float) -> str | None:
    """Kill switch: an active agent or gateway named by the revocation is suspended."""
    try:
        if kind is RevocationKind.agent:
            agent = store.fetch_agent(session, value)
            if agent is not None and agent.status is Status.active:
                store.set_agent_status(session, value, Status.suspended, now=now)
                return value
        elif kind is RevocationKind.gateway:
            gateway = store.fetch_gateway(session, value)
            if gateway is not None and gateway.status is Status.active:
                store.set_gateway_status(session, value, Status.suspended, now=now)
                return value
    except NotFound:
        return None
    return None


def revocation_event(
    revoked: Revoked, *, by: str, detail: dict[str, Any] | None = None, **columns: str | None
) -> AuditEvent:
    """The audit record of a revocation: the revoked value in its own column, so
    ``GET /v1/audit`` finds it by agent, gateway, subject, txn or jti."""
    r = revoked.revocation
    column = {
        RevocationKind.jti: "jti",
        RevocationKind.txn: "txn",
        RevocationKind.agent: "agent",
        RevocationKind.gateway: "gateway",
        RevocationKind.subject: "subject",
    }[r.kind]
    fields: dict[str, Any] = {**columns, column: r.value}
    return AuditEvent(
        kind="revocation",
        decision="changed",
        reason=f"revoked.{r.kind.value}",
        detail={
            "by": by,
            "revocation_id": r.id,
            "suspended": revoked.suspended is not None,
            "expires_at": r.expires_at,
            **({"note": r.reason} if r.reason else {}),
            **(detail or {}),
        },
        **fields,
    )


def announce_key_change(engine: Engine) -> None:
    """After a key rotation: bump the registry version so every replica reloads its keys
    at once (the keys' own poll stays the fallback)."""
    with Session(engine) as session:
        store.bump_version(session, "key")
        session.commit()
