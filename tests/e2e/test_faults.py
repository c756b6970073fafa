"""Faults and load over real HTTP on loopback.

- A real PostgreSQL outage, caused for this test's own database only (``ALLOW_CONNECTIONS
  false`` and its sessions terminated; the shared server keeps running): ``/token`` fails
  closed with 503 ``temporarily_unavailable``, ``/readyz`` says so, and both recover by
  themselves when the database returns; no half-written record, no token without its record.
- 1,000 concurrent ``/token`` requests (bounded, loopback, ends by itself): no duplicate
  ``jti`` and no lost audit record, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, make_url, text

from broker.audit.writer import verify_chain
from broker.cli.dev import DEV_AGENT, DEV_GATEWAY, DevTrustDomain
from broker.db import make_engine
from tests.conftest import PG_URL
from tests.revocation_kit import (
    FORM,
    Server,
    audited_jtis,
    claims_of,
    hammer,
    pg_database,
    start_writ,
    stop_writ,
    token_form,
    writ_env,
)

pytestmark = pytest.mark.e2e
ISSUER = "http://writ.faults.test"


@pytest.fixture
def pg_server(tmp_path: Path) -> Iterator[tuple[Server, str, Path]]:
    if not PG_URL:
        pytest.skip("WRIT_TEST_POSTGRES_URL not set")
    with pg_database(PG_URL) as url:
        server = start_writ(tmp_path / "data", writ_env(url, WRIT_ISSUER=ISSUER))
        try:
            yield server, url, tmp_path / "data"
        finally:
            stop_writ(server)


def outage(db_url: str, *, on: bool) -> None:
    """Refuse (or allow again) connections to this one database and end its sessions."""
    name = make_url(db_url).database
    assert PG_URL is not None and name and name.startswith("writ_")
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(not on).lower()}'))
            if on:
                conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                  "WHERE datname = :n AND pid <> pg_backend_pid()"), {"n": name})
    finally:
        admin.dispose()


@pytest.mark.postgres
def test_database_outage_fails_closed_and_recovers(
    pg_server: tuple[Server, str, Path],
) -> None:
    server, db_url, data = pg_server
    td = DevTrustDomain.load_or_create(data)
    body = token_form(td, ISSUER, DEV_AGENT, DEV_GATEWAY)
    returned: list[str] = []

    def ask() -> httpx.Response:
        r = httpx.post(f"{server.url}/token", content=body, headers=FORM, timeout=30)
        if r.status_code == 200:
            returned.append(claims_of(r.json()["access_token"])["jti"])
        return r

    assert ask().status_code == 200
    outage(db_url, on=True)
    try:
        started = time.monotonic()
        r = ask()
        assert r.status_code == 503
        assert r.headers["cache-control"] == "no-store"
        assert r.json() == {"error": "temporarily_unavailable",
                            "error_description": "the audit store is unavailable; try again"}
        assert time.monotonic() - started < 5.5  # WRIT_AUDIT_TIMEOUT_S bounds it
        ready = httpx.get(f"{server.url}/readyz", timeout=30)
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"] is False
        assert ready.json()["status"] == "not_ready"
        for _ in range(5):  # it keeps failing closed, never answering with a token
            assert ask().status_code == 503
    finally:
        outage(db_url, on=False)
    started = time.monotonic()
    while ask().status_code != 200:
        assert time.monotonic() - started < 15, "did not recover by itself"
        time.sleep(0.1)
    recovered = time.monotonic() - started
    assert httpx.get(f"{server.url}/readyz", timeout=30).status_code == 200
    engine = make_engine(db_url)
    try:
        assert verify_chain(engine).ok  # no half-written record
    finally:
        engine.dispose()
    recorded = audited_jtis(db_url)
    assert sorted(recorded) == sorted(returned)  # exactly the tokens returned, each once
    assert set(recorded.values()) == {1}
    print(f"outage: recovered {recovered:.2f}s after the database returned")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def load_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Server, str]]:
    data = tmp_path / "data"
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'writ.db'}"
        server = start_writ(data, writ_env(url, WRIT_ISSUER=ISSUER))
        try:
            yield server, url
        finally:
            stop_writ(server)
        return
    if not PG_URL:
        pytest.skip("WRIT_TEST_POSTGRES_URL not set")
    with pg_database(PG_URL) as url:
        server = start_writ(data, writ_env(url, WRIT_ISSUER=ISSUER))
        try:
            yield server, url
        finally:
            stop_writ(server)


def test_a_thousand_concurrent_requests(load_server: tuple[Server, str], tmp_path: Path) -> None:
    server, db_url = load_server
    td = DevTrustDomain.load_or_create(tmp_path / "data")
    body = token_form(td, ISSUER, DEV_AGENT, DEV_GATEWAY)
    started = time.monotonic()
    outcomes = asyncio.run(hammer([server.url], body, total=1000, concurrency=1000,
                                  timeout_s=120))
    elapsed = time.monotonic() - started
    assert len(outcomes) == 1000
    assert {o.status for o in outcomes} == {200}
    jtis = [o.jti for o in outcomes]
    assert len(set(jtis)) == 1000  # no duplicate jti
    recorded = audited_jtis(db_url)
    assert all(recorded.get(j) == 1 for j in jtis)  # no lost (or doubled) audit record
    engine = make_engine(db_url)
    try:
        assert verify_chain(engine).ok
    finally:
        engine.dispose()
    print(f"1000 concurrent /token on {db_url.split(':')[0]}: {elapsed:.2f}s")


@pytest.mark.postgres
def test_audit_writer_replaces_a_connection_lost_while_idle() -> None:
    """The writer keeps one connection between batches. Once the server ends it (a restart,
    an idle timeout), the next batch finds out before writing anything and goes on over a
    new connection: no request sees the loss, and nothing is written twice."""
    from sqlmodel import SQLModel

    from broker.audit.writer import AuditEvent, AuditHead, AuditRecord, AuditWriter

    if not PG_URL:
        pytest.skip("WRIT_TEST_POSTGRES_URL not set")
    with pg_database(PG_URL) as url:
        engine = make_engine(url)
        SQLModel.metadata.create_all(engine, tables=[AuditRecord.__table__,  # type: ignore[attr-defined]
                                                     AuditHead.__table__])  # type: ignore[attr-defined]
        writer = AuditWriter(engine)
        writer.start()
        try:
            assert writer.record_sync(AuditEvent(kind="token", decision="issued")) == 1
            name = make_url(url).database
            admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                ended = conn.execute(text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = :n AND pid <> pg_backend_pid()"), {"n": name}).scalar()
            admin.dispose()
            assert ended and ended >= 1
            assert writer.record_sync(AuditEvent(kind="token", decision="issued")) == 2
            assert verify_chain(engine).count == 2
        finally:
            writer.stop()
            engine.dispose()


@pytest.mark.postgres
def test_postgres_connections_bound_a_silent_peer() -> None:
    """The audit batch commits on the event loop's thread, so a vanished database host must
    fail the call: every PostgreSQL connection carries TCP keepalives and a send timeout."""
    if not PG_URL:
        pytest.skip("WRIT_TEST_POSTGRES_URL not set")
    engine = make_engine(PG_URL)
    try:
        conn = engine.raw_connection()
        try:
            dsn = dict(p.split("=", 1) for p in conn.driver_connection.info.dsn.split())  # type: ignore[union-attr]
        finally:
            conn.close()
    finally:
        engine.dispose()
    assert dsn["keepalives"] == "1"
    assert int(dsn["keepalives_idle"]) + int(dsn["keepalives_interval"]) * int(
        dsn["keepalives_count"]) <= 10  # a silent peer is found within 10 s
    assert int(dsn["tcp_user_timeout"]) <= 10_000
    assert int(dsn["connect_timeout"]) <= 10
