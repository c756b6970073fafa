"""Several replicas on one database.

- Two key rings rotating at once: the database lock lets exactly one rotate.
- Two apps in one process: a rotation through one is followed by the other within a second,
  and the key the other begins to sign with was published by both before.
- Two ``writ serve`` processes on one PostgreSQL database (a database of their own): a
  revocation or suspension made through one is honoured by the other's ``/token`` and
  ``/introspect`` within 1 s (measured); tokens minted by either verify against either's
  JWKS; the jwks verifier's online check works against a real ``/introspect``; killing one
  mid-load loses no audit record of a token it returned.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from broker.app import create_app
from broker.audit.writer import verify_chain
from broker.cli.dev import DEV_AGENT, DEV_GATEWAY, DevTrustDomain
from broker.db import make_engine
from broker.settings import Settings
from broker.signing.envelope import generate_kek
from broker.signing.keyring import KeyRing, KeyRingError
from broker.signing.settings import KeyRingSettings
from jwks import IntrospectionCheck, JwksClient, TokenInactive, TxnTokenVerifier
from tests.admin.test_admin_api import bearer, issue, root  # noqa: F401  (fixtures)
from tests.conftest import PG_URL, FrozenClock
from tests.revocation_kit import (
    FORM,
    RS,
    TRUST_DOMAIN,
    BearerSvid,
    Outcome,
    Server,
    audited_jtis,
    claims_of,
    form,
    hammer,
    pg_database,
    start_writ,
    stop_writ,
    token_form,
    writ_cli,
    writ_env,
)

ISSUER = "http://writ.replicas.test"  # both replicas answer for one issuer


def wait_until(predicate: Callable[[], bool], timeout_s: float, step_s: float = 0.005) -> float:
    """Seconds until ``predicate`` held; fails after ``timeout_s``."""
    started = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"not within {timeout_s}s")
        time.sleep(step_s)


# --- key rotation across replicas -------------------------------------------------------


def test_concurrent_rotations_elect_one(engine: Engine, db_url: str) -> None:
    settings = KeyRingSettings(max_token_ttl_s=600, publish_grace_s=5, refresh_interval_s=1)
    clock = FrozenClock()
    kek = generate_kek()
    other_engine = make_engine(db_url)
    rings = [KeyRing(engine, kek, settings, clock=clock),
             KeyRing(other_engine, kek, settings, clock=clock)]
    try:
        rings[0].bootstrap()
        rings[1].bootstrap()
        clock.advance(settings.publish_grace_s)
        barrier = threading.Barrier(2)
        results: list[object] = []

        def rotate(ring: KeyRing) -> None:
            barrier.wait()
            try:
                results.append(ring.rotate())
            except KeyRingError as err:
                results.append(err)

        threads = [threading.Thread(target=rotate, args=(r,)) for r in rings]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        errors = [r for r in results if isinstance(r, KeyRingError)]
        assert len(results) == 2 and len(errors) == 1
        assert "publish_grace_s" in str(errors[0])  # the loser saw the fresh next key
        states = [k.state for k in rings[0].list_keys()]
        assert states.count("active") == 1 and states.count("next") == 1
    finally:
        other_engine.dispose()


def test_rotation_through_one_app_reaches_the_other(
    settings: Settings, engine: Engine, db_url: str, seeded: DevTrustDomain, clock: FrozenClock,
    root: str,  # noqa: F811
) -> None:
    other_engine = make_engine(db_url)
    try:
        a = TestClient(create_app(settings, engine=engine, clock=clock), base_url=settings.issuer)
        b = TestClient(create_app(settings, engine=other_engine, clock=clock),
                       base_url=settings.issuer)
        with a, b:
            ring_a = a.app.state.broker.keyring  # type: ignore[attr-defined]
            ring_b = b.app.state.broker.keyring  # type: ignore[attr-defined]
            next_kid = [k["kid"] for k in ring_b.jwks()["keys"]][1]
            clock.advance(settings.keys.publish_grace_s)
            r = a.post("/v1/keys/rotate", headers=bearer(root))
            assert r.status_code == 200, r.text
            assert r.json()["activated_kid"] == next_kid == ring_a.signer().kid
            # the key A now signs with was already in B's JWKS
            assert next_kid in {k["kid"] for k in ring_b.jwks()["keys"]}
            elapsed = wait_until(lambda: ring_b.signer().kid == next_kid, 5.0)
            assert elapsed < 1.5  # the registry bump; the keys' own poll is 5 s
            assert ring_b.published() == ring_a.published()
    finally:
        other_engine.dispose()


# --- two processes on one PostgreSQL ---------------------------------------------------


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[tuple[Server, Server, dict[str, str], Path]]:
    if not PG_URL:
        pytest.skip("WRIT_TEST_POSTGRES_URL not set")
    data = tmp_path / "data"
    with pg_database(PG_URL) as url:
        env = writ_env(url, WRIT_ISSUER=ISSUER, WRIT_KEYS_PUBLISH_GRACE_S="5",
                       WRIT_KEYS_REFRESH_INTERVAL_S="5")
        a = start_writ(data, env)  # migrates and seeds first
        b = start_writ(data, env)
        try:
            yield a, b, env, data
        finally:
            stop_writ(a)
            stop_writ(b)


def mint(server: Server, td: DevTrustDomain) -> httpx.Response:
    return httpx.post(f"{server.url}/token", headers=FORM, timeout=10,
                      content=token_form(td, ISSUER, DEV_AGENT, DEV_GATEWAY))


def introspect(server: Server, td: DevTrustDomain, token: str) -> dict[str, Any]:
    r = httpx.post(f"{server.url}/introspect", content=form(token=token), timeout=10,
                   headers={**FORM, "Authorization": f"Bearer {td.mint_svid(RS, ISSUER)}"})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


@pytest.mark.e2e
@pytest.mark.postgres
def test_two_replicas_agree_within_a_second(
    replicas: tuple[Server, Server, dict[str, str], Path],
) -> None:
    a, b, env, data = replicas
    td = DevTrustDomain.load_or_create(data)
    admin = writ_cli(env, data, "admin-tokens", "create", "--name", "ops",
                     "--scope", "revocations:write", "--scope", "resource-servers:write",
                     "--scope", "keys:write", "--scope", "agents:write").strip()
    r = httpx.post(f"{a.url}/v1/resource-servers", headers=bearer(admin),
                   json={"client_id": RS, "audiences": [TRUST_DOMAIN]})
    assert r.status_code == 201, r.text
    measured: dict[str, float] = {}
    opened: list[Any] = []

    def jwks_of(server: Server) -> JwksClient:
        client = JwksClient(jwks_uri=f"{server.url}/.well-known/jwks.json")
        opened.append(client)
        return client

    try:
        _agree(a, b, td, admin, measured, jwks_of, opened)
    finally:
        for client in opened:
            client.close()
    print("replica propagation (s):", json.dumps({k: round(v, 4) for k, v in measured.items()}))


def _agree(a: Server, b: Server, td: DevTrustDomain, admin: str, measured: dict[str, float],
           jwks_of: Callable[[Server], JwksClient], opened: list[Any]) -> None:

    # tokens minted by either verify against either's JWKS
    tokens = {s.url: mint(s, td).json()["access_token"] for s in (a, b)}
    for s in (a, b):
        verifier = TxnTokenVerifier(jwks_of(s), issuer=ISSUER, audience=TRUST_DOMAIN)
        for token in tokens.values():
            assert verifier.verify(token).subject == DEV_AGENT

    # the resource server registered through A introspects at B
    measured["resource_server"] = wait_until(
        lambda: httpx.post(f"{b.url}/introspect", content=form(token=tokens[a.url]),
                           headers={**FORM, "Authorization":
                                    f"Bearer {td.mint_svid(RS, ISSUER)}"}).status_code == 200,
        1.0)
    assert introspect(b, td, tokens[a.url])["active"] is True

    # the jwks verifier's online check against B's real /introspect
    check = IntrospectionCheck(f"{b.url}/introspect",
                               auth=BearerSvid(lambda: td.mint_svid(RS, ISSUER)), cache_ttl_s=0)
    opened.append(check)
    online = TxnTokenVerifier(jwks_of(b),
                              issuer=ISSUER, audience=TRUST_DOMAIN, introspection=check)
    assert online.verify(tokens[a.url]).jti == claims_of(tokens[a.url])["jti"]

    # a txn revoked through A is inactive at B within 1 s
    r = httpx.post(f"{a.url}/v1/revocations", headers=bearer(admin),
                   json={"kind": "txn", "value": claims_of(tokens[a.url])["txn"]})
    assert r.status_code == 201, r.text
    measured["txn_revocation_introspect"] = wait_until(
        lambda: introspect(b, td, tokens[a.url])["active"] is False, 1.0)
    with pytest.raises(TokenInactive):
        online.verify(tokens[a.url])

    # a rotation through A: B publishes the new key before A signs with it, then follows
    jwks_b = httpx.get(f"{b.url}/.well-known/jwks.json").json()
    r = httpx.post(f"{a.url}/v1/keys/rotate", headers=bearer(admin))
    if r.status_code == 409:  # the next key is younger than publish_grace_s
        time.sleep(5)
        r = httpx.post(f"{a.url}/v1/keys/rotate", headers=bearer(admin))
    assert r.status_code == 200, r.text
    new_kid = r.json()["activated_kid"]
    assert new_kid in {k["kid"] for k in jwks_b["keys"]}
    from_a = mint(a, td).json()["access_token"]
    assert json.loads(httpx.get(f"{b.url}/.well-known/jwks.json").text)["keys"]
    TxnTokenVerifier(jwks_of(b), issuer=ISSUER, audience=TRUST_DOMAIN).verify(from_a)
    measured["key_rotation"] = wait_until(
        lambda: _kid(mint(b, td).json()["access_token"]) == new_kid, 2.0, step_s=0.05)

    # the kill switch through A: B's /token refuses and B's /introspect answers inactive
    live = mint(b, td).json()["access_token"]
    r = httpx.post(f"{a.url}/v1/revocations", headers=bearer(admin),
                   json={"kind": "agent", "value": DEV_AGENT})
    assert r.status_code == 201 and r.json()["suspended"] == DEV_AGENT
    started = time.monotonic()
    wait_until(lambda: introspect(b, td, live)["active"] is False, 1.0)
    measured["kill_switch_introspect"] = time.monotonic() - started
    wait_until(lambda: mint(b, td).status_code == 400, 1.0)
    measured["kill_switch_token"] = time.monotonic() - started
    assert mint(b, td).json()["error"] == "access_denied"

    # a suspension alone (no revocation entry) reaches B as fast
    r = httpx.post(f"{a.url}/v1/agents/{DEV_AGENT}/resume", headers=bearer(admin))
    assert r.status_code == 200
    wait_until(lambda: mint(b, td).status_code == 200, 1.0)
    r = httpx.post(f"{a.url}/v1/agents/{DEV_AGENT}/suspend", headers=bearer(admin))
    assert r.status_code == 200
    measured["suspension_token"] = wait_until(lambda: mint(b, td).status_code == 400, 1.0)


def _kid(token: str) -> str:
    import base64

    head = token.split(".")[0]
    kid: str = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))["kid"]
    return kid


@pytest.mark.e2e
@pytest.mark.postgres
def test_killing_a_replica_mid_load_loses_no_audit_record(
    replicas: tuple[Server, Server, dict[str, str], Path],
) -> None:
    a, b, env, data = replicas
    td = DevTrustDomain.load_or_create(data)
    body = token_form(td, ISSUER, DEV_AGENT, DEV_GATEWAY)
    answered_by_a = 0
    killed = threading.Event()

    def on_answer(outcome: Outcome) -> None:
        nonlocal answered_by_a
        if outcome.url == a.url and outcome.status == 200:
            answered_by_a += 1
            if answered_by_a == 100 and not killed.is_set():
                killed.set()
                threading.Thread(target=a.kill).start()

    outcomes = asyncio.run(hammer([a.url, b.url], body, total=800, concurrency=32,
                                  on_answer=on_answer, timeout_s=30))
    assert killed.is_set()
    ok = [o for o in outcomes if o.status == 200]
    from_a = [o for o in ok if o.url == a.url]
    lost = [o for o in outcomes if o.url == a.url and o.status is None]
    assert len(from_a) >= 100 and lost, "A was not killed mid-load"
    assert all(o.status in (200, None) for o in outcomes)
    jtis = [o.jti for o in ok]
    assert len(set(jtis)) == len(jtis)  # no duplicate jti
    recorded = audited_jtis(env["WRIT_DATABASE_URL"])
    missing = [j for j in jtis if j not in recorded]
    assert missing == [], f"{len(missing)} returned tokens have no audit record"
    assert all(recorded[j] == 1 for j in jtis)
    engine = make_engine(env["WRIT_DATABASE_URL"])
    try:
        assert verify_chain(engine).ok  # no half-written record
    finally:
        engine.dispose()
    print(f"kill mid-load: {len(from_a)} tokens from A before the kill, {len(lost)} requests "
          f"to A unanswered, {len(ok)} tokens in all, every one audited")
