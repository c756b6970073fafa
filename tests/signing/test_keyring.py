"""The signing key ring on SQLite, and on PostgreSQL when WRIT_TEST_POSTGRES_URL is set."""

from __future__ import annotations

import asyncio
import os
import pickle
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet
from pydantic import ValidationError
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import StaticPool
from sqlmodel import SQLModel

from broker.signing.envelope import KekError, SealedDataError, encode_kek, generate_kek, open_
from broker.signing.keyring import KeyRing, KeyRingError
from broker.signing.routes import jwks_router
from broker.signing.settings import KeyRingSettings
from broker.signing.store import KeyState, SigningKey, SigningKeyPublic
from jwks.keys import SIGNING_ALGORITHMS

POSTGRES_URL = os.environ.get("WRIT_TEST_POSTGRES_URL")
T0 = 1_700_000_000.0
TABLES = [SQLModel.metadata.tables[SigningKey.__tablename__]]
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Database:
    """One database; ``engine()`` opens another pool on it, as another replica would."""

    def __init__(self, url: str, connect_args: dict[str, Any]) -> None:
        self.url = url
        self.connect_args = connect_args
        self.engines: list[Engine] = []

    @property
    def dialect(self) -> str:
        return self.url.split(":", 1)[0].split("+", 1)[0]

    def engine(self) -> Engine:
        engine = create_engine(self.url, connect_args=self.connect_args)
        self.engines.append(engine)
        return engine

    def dispose(self) -> None:
        for engine in self.engines:
            engine.dispose()


@pytest.fixture(autouse=True)
def _no_keys_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("WRIT_KEYS_"):
            monkeypatch.delenv(name)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'writ.db'}", {})
        SQLModel.metadata.create_all(database.engine(), tables=TABLES)
        yield database
        database.dispose()
        return
    if not POSTGRES_URL:
        pytest.skip("WRIT_TEST_POSTGRES_URL is not set")
    schema = f"writ_keys_{uuid.uuid4().hex[:12]}"  # isolated from other suites on this database
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    database = Database(POSTGRES_URL, {"options": f"-csearch_path={schema}"})
    try:
        SQLModel.metadata.create_all(database.engine(), tables=TABLES)
        yield database
    finally:
        database.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def kek() -> bytes:
    return generate_kek()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def settings() -> KeyRingSettings:
    return KeyRingSettings(max_token_ttl_s=600, publish_grace_s=120)


@pytest.fixture
def ring(db: Database, kek: bytes, settings: KeyRingSettings, clock: Clock) -> KeyRing:
    ring = KeyRing(db.engine(), kek, settings, clock=clock)
    ring.bootstrap()
    return ring


def _replica(db: Database, kek: bytes, settings: KeyRingSettings, clock: Clock) -> KeyRing:
    return KeyRing(db.engine(), kek, settings, clock=clock)


def _states(ring: KeyRing) -> dict[str, KeyState]:
    return {k.kid: k.state for k in ring.list_keys()}


def _verify(token: str, jwks: dict[str, Any], alg: str = "ES256") -> dict[str, Any]:
    return jwt.decode(token, KeySet.import_key_set(jwks), algorithms=[alg]).claims  # type: ignore[arg-type]


def _kids(ring: KeyRing) -> list[str]:
    return [k["kid"] for k in ring.jwks()["keys"]]


def _sign(ring: KeyRing, clock: Clock) -> str:
    now = int(clock())
    claims = {"iss": "https://writ.test", "iat": now, "exp": now + 60, "txn": uuid.uuid4().hex}
    return ring.signer().sign(claims, typ="txntoken+jwt")


# --- bootstrap ---------------------------------------------------------------------------


def test_bootstrap_creates_one_active_and_one_next_key(ring: KeyRing) -> None:
    states = _states(ring)
    assert sorted(states.values()) == [KeyState.active, KeyState.next]
    active = next(kid for kid, s in states.items() if s is KeyState.active)
    assert ring.signer().kid == active
    # the next key is published before it ever signs
    assert sorted(_kids(ring)) == sorted(states)
    for jwk in ring.jwks()["keys"]:
        assert {"kid", "alg", "use"} <= jwk.keys()
        assert (jwk["alg"], jwk["use"]) == ("ES256", "sig")
        assert not PRIVATE_MEMBERS & jwk.keys()


def test_bootstrap_is_idempotent(
    ring: KeyRing, db: Database, kek: bytes, settings: KeyRingSettings, clock: Clock
) -> None:
    before = _states(ring)
    ring.bootstrap()
    other = _replica(db, kek, settings, clock)
    other.bootstrap()
    assert _states(ring) == before
    assert other.signer().kid == ring.signer().kid
    assert other.jwks() == ring.jwks()


def test_replicas_bootstrapping_together_create_one_active_key(
    db: Database, kek: bytes, settings: KeyRingSettings, clock: Clock
) -> None:
    replicas = [_replica(db, kek, settings, clock) for _ in range(4)]
    barrier = threading.Barrier(len(replicas))
    errors: list[BaseException] = []

    def start(replica: KeyRing) -> None:
        barrier.wait()
        try:
            replica.bootstrap()
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=start, args=(r,)) for r in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(_states(replicas[0]).values()) == [KeyState.active, KeyState.next]
    assert len({r.signer().kid for r in replicas}) == 1
    assert len({r.published().etag for r in replicas}) == 1


def test_hot_path_needs_a_loaded_ring(db: Database, kek: bytes, settings: KeyRingSettings) -> None:
    ring = KeyRing(db.engine(), kek, settings)
    with pytest.raises(KeyRingError, match="not loaded"):
        ring.signer()
    with pytest.raises(KeyRingError, match="not loaded"):
        ring.jwks()


def test_kek_must_be_256_bits(db: Database, settings: KeyRingSettings) -> None:
    with pytest.raises(KekError):
        KeyRing(db.engine(), b"\0" * 16, settings)


def test_wrong_kek_cannot_load(ring: KeyRing, db: Database, settings: KeyRingSettings) -> None:
    with pytest.raises(SealedDataError):
        KeyRing(db.engine(), generate_kek(), settings).load()


# --- rotation ----------------------------------------------------------------------------


def test_rotation_keeps_old_tokens_verifiable_until_publish_until(
    ring: KeyRing, settings: KeyRingSettings, clock: Clock
) -> None:
    old_active = ring.signer().kid
    old_next = next(k for k, s in _states(ring).items() if s is KeyState.next)
    token = _sign(ring, clock)

    clock.advance(settings.publish_grace_s)
    result = ring.rotate()

    assert (result.activated_kid, result.retired_kid) == (old_next, old_active)
    assert ring.signer().kid == old_next
    assert _states(ring) == {
        old_active: KeyState.retired, old_next: KeyState.active, result.next_kid: KeyState.next,
    }
    assert sorted(_kids(ring)) == sorted([old_active, old_next, result.next_kid])
    assert _verify(token, ring.jwks())["iss"] == "https://writ.test"
    assert _verify(_sign(ring, clock), ring.jwks())["iss"] == "https://writ.test"

    retired = next(k for k in ring.list_keys() if k.kid == old_active)
    publish_until = clock() + settings.max_token_ttl_s + settings.publish_grace_s
    assert (retired.retired_at, retired.publish_until) == (clock(), publish_until)

    clock.now = publish_until - 1
    assert ring.refresh_if_changed() is False
    assert ring.prune() == []
    assert old_active in _kids(ring)

    clock.now = publish_until
    assert ring.refresh_if_changed() is True
    assert old_active not in _kids(ring)
    assert old_active in _states(ring)  # unpublished, not yet pruned
    assert ring.prune() == [old_active]
    assert old_active not in _states(ring)
    assert sorted(_states(ring)) == sorted([old_next, result.next_kid])


def test_rotation_waits_until_the_next_key_is_published_long_enough(
    ring: KeyRing, settings: KeyRingSettings, clock: Clock
) -> None:
    clock.advance(settings.publish_grace_s - 1)
    with pytest.raises(KeyRingError, match="publish_grace_s"):
        ring.rotate()
    result = ring.rotate(force=True)
    assert ring.signer().kid == result.activated_kid


def test_second_replica_sees_rotation_after_refresh(
    ring: KeyRing, db: Database, kek: bytes, settings: KeyRingSettings, clock: Clock
) -> None:
    replica = _replica(db, kek, settings, clock)
    replica.bootstrap()
    assert replica.refresh_if_changed() is False

    clock.advance(settings.publish_grace_s)
    result = ring.rotate()
    # until it refreshes, the replica signs with the retired key; that key stays published
    stale_token = _sign(replica, clock)
    assert replica.signer().kid == result.retired_kid
    assert result.activated_kid in _kids(replica)  # published before anyone signed with it
    assert _verify(stale_token, ring.jwks())

    assert replica.refresh_if_changed() is True
    assert replica.refresh_if_changed() is False
    assert replica.signer().kid == result.activated_kid
    assert replica.jwks() == ring.jwks()
    assert replica.published() == ring.published()
    assert _verify(_sign(ring, clock), replica.jwks())


def test_background_refresh_thread(
    ring: KeyRing, db: Database, kek: bytes, settings: KeyRingSettings, clock: Clock
) -> None:
    replica = _replica(db, kek, settings, clock)
    replica.load()
    replica.start(interval=0.02)
    try:
        with pytest.raises(KeyRingError, match="already running"):
            replica.start()
        clock.advance(settings.publish_grace_s)
        result = ring.rotate()
        deadline = time.monotonic() + 10
        while replica.signer().kid != result.activated_kid and time.monotonic() < deadline:
            time.sleep(0.01)
        assert replica.signer().kid == result.activated_kid
    finally:
        replica.stop()
    assert not any(t.name == "writ-keyring-refresh" for t in threading.enumerate())


# --- secrets stay secret -----------------------------------------------------------------


def test_private_key_is_stored_only_sealed(ring: KeyRing, db: Database, kek: bytes) -> None:
    with db.engine().connect() as conn:
        rows = conn.execute(
            text("SELECT kid, public_jwk, private_key_sealed FROM signing_keys")
        ).all()
    assert len(rows) == 2
    for kid, public, sealed in rows:
        pkcs8 = open_(kek, bytes(sealed), kid.encode())
        assert pkcs8[:1] == b"\x30"  # DER SEQUENCE
        assert pkcs8 not in bytes(sealed)
        assert pkcs8[-32:] not in bytes(sealed)
        assert '"d"' not in public
        with pytest.raises(SealedDataError):  # bound to its row: aad = kid
            open_(kek, bytes(sealed), b"another-kid")


def test_nothing_shows_private_material(ring: KeyRing, db: Database, kek: bytes) -> None:
    with db.engine().connect() as conn:
        kid, sealed = conn.execute(
            text("SELECT kid, private_key_sealed FROM signing_keys WHERE state = 'active'")
        ).one()
    private = ECKey.import_key(open_(kek, bytes(sealed), kid.encode())).as_dict(private=True)
    shown = " ".join(
        [repr(ring), str(ring), repr(ring.signer()), str(ring.signer()),
         str(ring.jwks()), repr(ring.list_keys()), ring.published().body.decode()]
    )
    for secret in (str(private["d"]), kek.hex(), encode_kek(kek)):
        assert secret not in shown
    assert not hasattr(ring.signer(), "key")
    for obj in (ring, ring.signer()):
        with pytest.raises(TypeError):
            pickle.dumps(obj)


def test_list_keys_returns_the_public_model(ring: KeyRing) -> None:
    keys = ring.list_keys()
    assert all(type(k) is SigningKeyPublic for k in keys)
    assert "private_key_sealed" not in SigningKeyPublic.model_fields
    assert keys[0].public_jwk["kid"] == keys[0].kid
    assert keys[0].created_at == T0


# --- databases and algorithms ------------------------------------------------------------


def test_in_memory_sqlite(kek: bytes, settings: KeyRingSettings, clock: Clock) -> None:
    engine = create_engine(
        "sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False}
    )
    try:
        SQLModel.metadata.create_all(engine, tables=TABLES)
        ring = KeyRing(engine, kek, settings, clock=clock)
        ring.bootstrap()
        token = _sign(ring, clock)
        clock.advance(settings.publish_grace_s)
        ring.rotate()
        assert _verify(token, ring.jwks())
    finally:
        engine.dispose()


@pytest.mark.parametrize("alg", SIGNING_ALGORITHMS)
def test_every_signing_algorithm(tmp_path: Path, kek: bytes, clock: Clock, alg: str) -> None:
    database = Database(f"sqlite:///{tmp_path / 'writ.db'}", {})
    try:
        engine = database.engine()
        SQLModel.metadata.create_all(engine, tables=TABLES)
        ring = KeyRing(engine, kek, KeyRingSettings(alg=alg), clock=clock)
        ring.bootstrap()
        assert ring.signer().alg == alg
        assert {k["alg"] for k in ring.jwks()["keys"]} == {alg}
        assert _verify(_sign(ring, clock), ring.jwks(), alg)
    finally:
        database.dispose()


# --- settings ----------------------------------------------------------------------------


def test_settings_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = KeyRingSettings()
    assert (defaults.alg, defaults.max_token_ttl_s) == ("ES256", 3600)
    assert (defaults.publish_grace_s, defaults.refresh_interval_s) == (300, 5)
    monkeypatch.setenv("WRIT_KEYS_ALG", "Ed25519")
    monkeypatch.setenv("WRIT_KEYS_MAX_TOKEN_TTL_S", "900")
    assert (KeyRingSettings().alg, KeyRingSettings().max_token_ttl_s) == ("Ed25519", 900)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"alg": "HS256"},
        {"alg": "none"},
        {"max_token_ttl_s": 59},
        {"max_token_ttl_s": 86401},
        {"refresh_interval_s": 0},
        {"refresh_interval_s": 301},
        {"publish_grace_s": -1},
        {"publish_grace_s": 2, "refresh_interval_s": 3},
    ],
    ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()),
)
def test_settings_bounds(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        KeyRingSettings(**kwargs)


# --- the JWKS route ----------------------------------------------------------------------


def _get(ring: KeyRing, headers: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
    app = FastAPI()
    app.include_router(jwks_router(ring, **kwargs))

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://writ.test") as client:
            return await client.get("/.well-known/jwks.json", headers=headers)

    return asyncio.run(get())


def test_jwks_route(ring: KeyRing, settings: KeyRingSettings, clock: Clock) -> None:
    response = _get(ring)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/jwk-set+json"
    # max-age never exceeds publish_grace_s (120 here)
    assert response.headers["cache-control"] == "public, max-age=120"
    etag = response.headers["etag"]
    assert etag == ring.published().etag and etag.startswith('"')
    assert response.json() == ring.jwks()
    assert response.content == ring.published().body

    not_modified = _get(ring, {"If-None-Match": etag})
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert not_modified.headers["etag"] == etag
    assert not_modified.headers["cache-control"] == "public, max-age=120"
    assert _get(ring, {"If-None-Match": f'"x", W/{etag}'}).status_code == 304

    clock.advance(settings.publish_grace_s)
    ring.rotate()
    changed = _get(ring, {"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    assert len(changed.json()["keys"]) == 3


def test_jwks_route_max_age(ring: KeyRing) -> None:
    assert _get(ring, max_age_s=30).headers["cache-control"] == "public, max-age=30"
