"""Two ``writ serve`` processes on one database: a charter change, and namespace-bound
changes, made through one replica's admin API take effect on the other replica's
``/token``. On PostgreSQL the registry poll is set to 30 s, so only LISTEN/NOTIFY can
deliver the change, and it must arrive within a second (measured from the admin API's
answer to the first answer of the other replica that reflects it). On SQLite the version
poll (1 s) delivers it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import create_engine, make_url, text

from broker.cli.dev import DEV_AGENT, DEV_AGENT_NAMESPACE, DEV_GATEWAY, DevTrustDomain
from tests.conftest import PG_URL

BIN = Path(sys.executable).parent
GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_SPIFFE = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe"
pytestmark = pytest.mark.e2e


@dataclass
class Replica:
    url: str
    proc: subprocess.Popen[bytes]
    log: IO[str]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(data_dir: Path, env: dict[str, str], log_path: Path) -> Replica:
    port = _free_port()
    log = log_path.open("w")
    proc = subprocess.Popen(
        [str(BIN / "writ"), "serve", "--dev", "--data-dir", str(data_dir), "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    replica = Replica(f"http://127.0.0.1:{port}", proc, log)
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{replica.url}/readyz", timeout=1).status_code == 200:
                return replica
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(replica)
            raise AssertionError(log_path.read_text()[-4000:])
        time.sleep(0.1)


def _stop(replica: Replica) -> None:
    replica.proc.terminate()
    try:
        replica.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        replica.proc.kill()
        replica.proc.wait(timeout=10)
    replica.log.close()


@pytest.fixture
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """("sqlite" | "postgres", URL). PostgreSQL: a database of its own, so no other test's
    notifications reach these replicas."""
    backend = request.param
    if backend == "sqlite":
        yield backend, f"sqlite:///{tmp_path / 'shared.db'}"
        return
    assert PG_URL is not None
    name = f"writ_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield backend, make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


BACKENDS = ["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, *(
    [] if PG_URL else [pytest.mark.skip(reason="WRIT_TEST_POSTGRES_URL not set")])])]


def _until(predicate: Callable[[], bool], timeout_s: float) -> float:
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout_s, "the change did not arrive"
        time.sleep(0.01)
    return time.monotonic() - started


@pytest.mark.parametrize("database", BACKENDS, indirect=True)
def test_registry_changes_reach_the_other_replica(database: tuple[str, str],
                                                  tmp_path: Path) -> None:
    backend, url = database
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WRIT_")}
    env["WRIT_DATABASE_URL"] = url
    if backend == "postgres":
        env["WRIT_SNAPSHOT_POLL_INTERVAL_S"] = "30"  # only NOTIFY can be this fast
    a = _start(data_dir, env, tmp_path / "a.log")
    try:
        b = _start(data_dir, env, tmp_path / "b.log")
        try:
            _exercise(a, b, data_dir, env, limit_s=1.0 if backend == "postgres" else 2.5)
        finally:
            _stop(b)
    finally:
        _stop(a)


def _exercise(a: Replica, b: Replica, data_dir: Path, env: dict[str, str], *,
              limit_s: float) -> None:
    created = subprocess.run(
        [str(BIN / "writ"), "admin-tokens", "create", "--name", "replicas",
         "--scope", "agents:write", "--scope", "bounds:write", "--data-dir", str(data_dir)],
        env=env, capture_output=True, text=True, timeout=60, check=True)
    admin = {"Authorization": f"Bearer {created.stdout.strip()}"}
    td = DevTrustDomain.load_or_create(data_dir)

    def token_at_b(**extra: str) -> httpx.Response:
        return httpx.post(f"{b.url}/token", timeout=5, data={
            "grant_type": GRANT, "client_assertion_type": JWT_SPIFFE,
            "client_assertion": td.mint_svid(DEV_GATEWAY, b.url),
            "subject_token": td.mint_svid(DEV_AGENT, b.url),
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "requested_token_type": "urn:ietf:params:oauth:token-type:txn_token",
            "audience": "dev.writ.local", "scope": "demo.read", **extra})

    def refused_with(reason_error: str, **extra: str) -> Callable[[], bool]:
        def check() -> bool:
            r = token_at_b(**extra)
            return r.status_code == 400 and r.json()["error"] == reason_error
        return check

    def issued(**extra: str) -> Callable[[], bool]:
        return lambda: token_at_b(**extra).status_code == 200

    timings: dict[str, float] = {}
    assert token_at_b(scope="demo.write").status_code == 200

    # a charter change through A: B stops granting the scope it took away
    r = httpx.patch(f"{a.url}/v1/agents/{quote(DEV_AGENT, safe='')}", headers=admin,
                    timeout=10, json={"charter": {"purpose": "demo assistant",
                                                  "scopes": ["demo.read"]}})
    assert r.status_code == 200, r.text
    timings["charter"] = _until(refused_with("invalid_scope", scope="demo.write"), 10)

    # a namespace bound removed through A: B refuses the agent before reading the charter
    bound = f"{a.url}/v1/bounds/{quote(DEV_AGENT_NAMESPACE, safe='')}"
    assert httpx.delete(bound, headers=admin, timeout=10).status_code == 204
    timings["bound removed"] = _until(refused_with("access_denied"), 10)
    r = token_at_b()
    assert r.json()["error_description"] == "no namespace bound covers the agent"

    # and set again
    r = httpx.put(f"{a.url}/v1/bounds", headers=admin, timeout=10, json={
        "pattern": DEV_AGENT_NAMESPACE, "tags": ["demo"], "scopes": ["demo.read"],
        "max_risk": "low"})
    assert r.status_code == 201, r.text
    timings["bound set"] = _until(issued(), 10)

    print(f"\nchange seen by the other replica after (s): {_fmt(timings)}")
    assert all(t < limit_s for t in timings.values()), timings


def _fmt(timings: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in timings.items())
