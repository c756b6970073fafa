"""The signing key ring: generation, encryption at rest, rotation and the published JWKS.

Keys move ``next`` → ``active`` → ``retired``. The next key is published before it signs and a
retired key stays published until every token it signed has expired, so a verifier can always
find the key of a live token. Writes run under one database lock (a PostgreSQL advisory lock,
SQLite's write lock), so replicas starting or rotating together agree on one active key.

The hot path reads no database row (DESIGN §6): ``signer()`` and ``jwks()`` return in-memory
snapshots; ``refresh_if_changed()`` (or the ``start()`` thread) picks up other replicas' writes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from joserfc.jwk import ECKey, OKPKey, RSAKey
from sqlalchemy import Engine, text
from sqlmodel import Session, col, delete, select

from broker.signing.envelope import KEK_SIZE, KekError, open_, seal
from broker.signing.settings import KeyRingSettings
from broker.signing.signer import KeySigner, Signer
from broker.signing.store import KeyState, SigningKey, SigningKeyPublic
from jwks.errors import JwksError
from jwks.keys import AnyKey, generate_key, public_jwk, thumbprint

log = logging.getLogger(__name__)

#: pg_advisory_xact_lock key shared by every replica writing signing keys ("writkeys").
ADVISORY_LOCK_ID: Final = 0x7772_6974_6B65_7973
_DIALECTS: Final = frozenset({"sqlite", "postgresql"})


class KeyRingError(JwksError):
    """The key ring is not loaded, inconsistent, or a rotation was refused."""

    code = "key_ring_error"


@dataclass(frozen=True, slots=True)
class RotationResult:
    activated_kid: str
    retired_kid: str
    next_kid: str


@dataclass(frozen=True, slots=True)
class PublishedJwks:
    """The JWKS document as served: its bytes and a strong ETag (RFC 9110 §8.8.3)."""

    body: bytes
    etag: str


@dataclass(frozen=True, slots=True)
class _Snapshot:
    signer: KeySigner
    keys: tuple[dict[str, Any], ...]
    published: PublishedJwks
    fingerprint: str
    reload_at: float  # earliest publish_until still in the JWKS
    retired: Mapping[str, float]  # kid -> retired_at, of retired keys still published


def _private_class(alg: str) -> type[ECKey] | type[RSAKey] | type[OKPKey]:
    if alg.startswith("ES"):
        return ECKey
    if alg.startswith(("RS", "PS")):
        return RSAKey
    return OKPKey


def _fingerprint(rows: list[tuple[str, str, float | None]]) -> str:
    data = json.dumps(sorted(rows, key=lambda r: r[0]), separators=(",", ":"))
    return hashlib.sha256(data.encode()).hexdigest()


def _public(row: SigningKey) -> SigningKeyPublic:
    return SigningKeyPublic(
        kid=row.kid,
        alg=row.alg,
        state=KeyState(row.state),
        created_at=row.created_at,
        activated_at=row.activated_at,
        retired_at=row.retired_at,
        publish_until=row.publish_until,
        public_jwk=json.loads(row.public_jwk),
    )


class KeyRing:
    """The replica's view of the signing keys; the only path to their private halves."""

    __slots__ = (
        "__kek",
        "_clock",
        "_engine",
        "_load_lock",
        "_settings",
        "_snapshot",
        "_stop",
        "_thread",
    )

    def __init__(
        self,
        engine: Engine,
        kek: bytes,
        settings: KeyRingSettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if engine.dialect.name not in _DIALECTS:
            raise KeyRingError(f"unsupported database dialect {engine.dialect.name!r}")
        if len(kek) != KEK_SIZE:
            raise KekError(f"the KEK must be {KEK_SIZE} bytes (AES-256)")
        self._engine = engine
        self.__kek = kek
        self._settings = settings
        self._clock = clock
        self._snapshot: _Snapshot | None = None
        self._load_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        snap = self._snapshot
        kid = snap.signer.kid if snap else None
        return f"KeyRing(active_kid={kid!r}, published={len(snap.keys) if snap else 0})"

    def __reduce__(self) -> Any:  # holds the KEK: never pickled or copied out of the process
        raise TypeError("a key ring cannot be serialized")

    @property
    def settings(self) -> KeyRingSettings:
        return self._settings

    # --- writes, under the database lock ---------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[Session]:
        with Session(self._engine) as session:
            if self._engine.dialect.name == "postgresql":
                # held until commit or rollback
                session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": ADVISORY_LOCK_ID})
            else:
                # SQLite: take the write lock before reading, so a second writer waits here
                session.execute(text("BEGIN IMMEDIATE"))
            yield session
            session.commit()

    def _new_key(self, state: KeyState, now: float) -> SigningKey:
        alg = self._settings.alg
        key = generate_key(alg)
        kid = thumbprint(key)
        pkcs8 = key.as_der(private=True)  # PKCS#8 (RFC 5208), unencrypted: sealed below
        return SigningKey(
            kid=kid,
            alg=alg,
            state=state,
            public_jwk=json.dumps(public_jwk(key, alg=alg), sort_keys=True),
            private_key_sealed=seal(self.__kek, pkcs8, kid.encode()),
            created_at=now,
            activated_at=now if state is KeyState.active else None,
        )

    @staticmethod
    def _by_state(session: Session, state: KeyState) -> list[SigningKey]:
        stmt = select(SigningKey).where(SigningKey.state == state)
        return list(session.exec(stmt.order_by(col(SigningKey.created_at).desc())))

    def bootstrap(self) -> dict[str, str]:
        """Make sure there is one active and one next key, then load. Idempotent.
        Returns what it changed, ``kid`` → new state (empty when nothing was needed)."""
        changed: dict[str, str] = {}
        with self._locked() as session:
            now = self._clock()
            active = self._by_state(session, KeyState.active)
            nexts = self._by_state(session, KeyState.next)
            if not active:
                if nexts:  # already published: promote rather than sign with an unseen key
                    promoted = nexts.pop(0)
                    promoted.state = KeyState.active
                    promoted.activated_at = now
                    session.add(promoted)
                    changed[promoted.kid] = "active"
                else:
                    key = self._new_key(KeyState.active, now)
                    session.add(key)
                    changed[key.kid] = "active"
            if not nexts:
                key = self._new_key(KeyState.next, now)
                session.add(key)
                changed[key.kid] = "next"
        self.load()
        return changed

    def rotate(self, *, force: bool = False) -> RotationResult:
        """next → active, active → retired, new next; then load.

        The next key must have been published for ``publish_grace_s`` first, so every replica
        and every JWKS cache (max-age ≤ that) holds it before it signs; ``force`` skips this
        for an emergency.
        """
        with self._locked() as session:
            now = self._clock()
            active = self._by_state(session, KeyState.active)
            nexts = self._by_state(session, KeyState.next)
            if len(active) != 1 or not nexts:
                raise KeyRingError("no active and next key to rotate: bootstrap first")
            old, new = active[0], nexts[0]
            if not force and now - new.created_at < self._settings.publish_grace_s:
                raise KeyRingError(
                    f"the next key {new.kid} has been published for less than "
                    f"publish_grace_s={self._settings.publish_grace_s}s"
                )
            old.state = KeyState.retired
            old.retired_at = now
            # tokens signed by the old key live at most max_token_ttl_s; the grace covers
            # replicas that sign with it until their next refresh
            ttl, grace = self._settings.max_token_ttl_s, self._settings.publish_grace_s
            old.publish_until = now + ttl + grace
            new.state = KeyState.active
            new.activated_at = now
            fresh = self._new_key(KeyState.next, now)
            session.add_all([old, new, fresh])
            result = RotationResult(activated_kid=new.kid, retired_kid=old.kid, next_kid=fresh.kid)
        log.info(
            "signing keys rotated: active=%s retired=%s next=%s",
            result.activated_kid, result.retired_kid, result.next_kid,
        )
        self.load()
        return result

    def prune(self) -> list[str]:
        """Delete retired keys whose ``publish_until`` has passed; return their kids."""
        now = self._clock()
        with Session(self._engine) as session:
            expired = col(SigningKey.publish_until) <= now
            stmt = select(SigningKey.kid).where(SigningKey.state == KeyState.retired, expired)
            kids = list(session.exec(stmt))
            if kids:
                session.exec(delete(SigningKey).where(col(SigningKey.kid).in_(kids)))
                session.commit()
        if kids:
            log.info("pruned retired signing keys: %s", ", ".join(kids))
            self.load()
        return kids

    # --- reads -------------------------------------------------------------------------

    def load(self) -> None:
        """Read every key, decrypt only the active one, and swap in a new snapshot."""
        with self._load_lock, Session(self._engine) as session:
            rows = list(session.exec(select(SigningKey)))
            self._snapshot = self._build(rows, self._clock())

    def _build(self, rows: list[SigningKey], now: float) -> _Snapshot:
        active = [r for r in rows if r.state == KeyState.active]
        if len(active) != 1:
            raise KeyRingError(f"expected one active signing key, found {len(active)}")
        signer = KeySigner(self._unseal(active[0]), active[0].alg)
        if signer.kid != active[0].kid:
            raise KeyRingError(f"active key {active[0].kid} does not match its stored kid")

        nexts = sorted((r for r in rows if r.state == KeyState.next), key=lambda r: r.created_at)
        retired = sorted(
            (r for r in rows if r.state == KeyState.retired and (r.publish_until or 0) > now),
            key=lambda r: (-(r.retired_at or 0), r.kid),
        )
        keys = tuple(json.loads(r.public_jwk) for r in [active[0], *nexts, *retired])
        body = json.dumps({"keys": keys}, separators=(",", ":"), sort_keys=True).encode()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        return _Snapshot(
            signer=signer,
            keys=keys,
            published=PublishedJwks(body=body, etag=etag),
            fingerprint=_fingerprint([(r.kid, str(r.state), r.publish_until) for r in rows]),
            reload_at=min((r.publish_until or 0 for r in retired), default=float("inf")),
            retired=MappingProxyType({r.kid: r.retired_at or 0.0 for r in retired}),
        )

    def _unseal(self, row: SigningKey) -> AnyKey:
        pkcs8 = open_(self.__kek, row.private_key_sealed, row.kid.encode())
        return _private_class(row.alg).import_key(pkcs8)

    def refresh_if_changed(self) -> bool:
        """Reload if the set of keys or their states changed, or a retired key's publication
        ended; return whether it reloaded."""
        snap = self._snapshot
        with Session(self._engine) as session:
            stmt = select(SigningKey.kid, SigningKey.state, SigningKey.publish_until)
            rows = [(k, str(s), p) for k, s, p in session.exec(stmt)]
        if snap and snap.fingerprint == _fingerprint(rows) and self._clock() < snap.reload_at:
            return False
        self.load()
        return True

    def start(self, interval: float | None = None) -> None:
        """Poll for other replicas' rotations on a daemon thread."""
        if self._thread is not None:
            raise KeyRingError("the refresh thread is already running")
        period = self._settings.refresh_interval_s if interval is None else interval
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(period,), name="writ-keyring-refresh", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join(timeout)

    def _run(self, period: float) -> None:
        while not self._stop.wait(period):
            try:
                self.refresh_if_changed()
            except Exception as err:  # keep serving the last good snapshot
                log.warning("signing key refresh failed: %s", type(err).__name__)

    # --- hot path ----------------------------------------------------------------------

    def _loaded(self) -> _Snapshot:
        snap = self._snapshot
        if snap is None:
            raise KeyRingError("the key ring is not loaded: call bootstrap() or load()")
        return snap

    def signer(self) -> Signer:
        return self._loaded().signer

    def jwks(self) -> dict[str, Any]:
        """RFC 7517 §5 JWK Set: public keys only, each with ``kid``, ``alg`` and ``use``."""
        return {"keys": [dict(k) for k in self._loaded().keys]}

    def published(self) -> PublishedJwks:
        return self._loaded().published

    def retired(self) -> Mapping[str, float]:
        """``kid`` → ``retired_at`` of every retired key still published."""
        return self._loaded().retired

    def list_keys(self) -> list[SigningKeyPublic]:
        """Every stored key, newest first, without private material (reads the database)."""
        with Session(self._engine) as session:
            stmt = select(SigningKey).order_by(col(SigningKey.created_at).desc())
            return [_public(r) for r in session.exec(stmt)]
