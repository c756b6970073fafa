"""Liveness and readiness of a real ``writ serve`` process while its PostgreSQL hangs.

The database is reached through a loopback TCP relay that this test can stall: the relay
keeps every connection open but stops passing bytes either way, and new connections are
accepted and never answered, as a hung server or a black-holed network would. ``/healthz``
must answer at once; ``/readyz`` must answer within its bound, say which check failed, and
recover by itself when the database answers again.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import make_url

from tests.conftest import PG_URL
from tests.revocation_kit import Server, pg_database, start_writ, stop_writ, writ_env

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]
ISSUER = "http://writ.readiness.test"


class StallingRelay:
    """Relays loopback TCP to ``target``; ``stall()`` freezes every byte, ``resume()`` thaws."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.flowing = threading.Event()
        self.flowing.set()
        self.closed = threading.Event()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def stall(self) -> None:
        self.flowing.clear()

    def resume(self) -> None:
        self.flowing.set()

    def close(self) -> None:
        self.closed.set()
        self.flowing.set()
        self.listener.close()
        with self._lock:
            for a, b in self._pairs:
                a.close()
                b.close()
        for t in self._threads:
            t.join(timeout=5)

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(client,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, client: socket.socket) -> None:
        # a connection made while stalled is accepted and never answered
        while not self.flowing.wait(0.1):
            if self.closed.is_set():
                client.close()
                return
        upstream = socket.create_connection(self.target)
        with self._lock:
            self._pairs.append((client, upstream))
        peers = {client: upstream, upstream: client}
        try:
            while not self.closed.is_set():
                if not self.flowing.wait(0.1):
                    continue  # stalled: bytes wait in the kernel, unread
                ready, _, _ = select.select(list(peers), [], [], 0.1)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except OSError:
            return
        finally:
            client.close()
            upstream.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Server, StallingRelay, Path]]:
    if not PG_URL:
        pytest.skip("WRIT_TEST_POSTGRES_URL not set")
    with pg_database(PG_URL) as direct:
        url = make_url(direct)
        relay = StallingRelay((url.host or "127.0.0.1", url.port or 5432))
        through = url.set(host="127.0.0.1", port=relay.port).render_as_string(
            hide_password=False)
        server = start_writ(tmp_path / "data", writ_env(
            through, WRIT_ISSUER=ISSUER, WRIT_AUDIT_TIMEOUT_S="3",
            WRIT_READINESS_DB_TIMEOUT_S="1"))
        try:
            yield server, relay, tmp_path / "data"
        finally:
            relay.resume()
            stop_writ(server)
            relay.close()


def _timed_get(url: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    r = httpx.get(url, timeout=30)
    return r, time.monotonic() - started


def test_healthz_stays_live_and_readyz_says_why_while_the_database_hangs(
    served: tuple[Server, StallingRelay, Path],
) -> None:
    server, relay, _ = served
    r, _ = _timed_get(f"{server.url}/readyz")
    assert (r.status_code, r.json()) == (200, {
        "status": "ready",
        "checks": {"database": True, "signing_key": True, "trust_domain": True}})

    relay.stall()
    try:
        for _ in range(5):
            r, took = _timed_get(f"{server.url}/healthz")
            assert (r.status_code, r.json()) == (200, {"status": "ok"})
            assert took < 1.0, f"/healthz took {took:.2f}s"
            time.sleep(0.2)

        r, took = _timed_get(f"{server.url}/readyz")
        assert r.status_code == 503
        assert r.headers["cache-control"] == "no-store"
        assert r.json() == {
            "status": "not_ready",
            "checks": {"database": False, "signing_key": True, "trust_domain": True},
            "failed": {"database": "no answer within 1s"}}
        assert took < 2.0, f"/readyz took {took:.2f}s"
        # the first probe still waits on the hung connection: no second one piles up, and
        # liveness is unaffected by it
        for _ in range(3):
            r, took = _timed_get(f"{server.url}/readyz")
            assert r.json()["failed"] == {
                "database": "no answer within 1s (an earlier check still waits)"}
            assert took < 1.0
            r, took = _timed_get(f"{server.url}/healthz")
            assert r.status_code == 200 and took < 1.0
    finally:
        relay.resume()

    deadline = time.monotonic() + 30
    while httpx.get(f"{server.url}/readyz", timeout=30).status_code != 200:
        assert time.monotonic() < deadline, "readiness did not recover by itself"
        time.sleep(0.2)


def test_token_traffic_never_holds_liveness_while_the_database_hangs(
    served: tuple[Server, StallingRelay, Path],
) -> None:
    """Audit commits run on the event loop's thread; a commit stuck on a hung database is cut
    after WRIT_AUDIT_STALL_S and reconnecting happens off the loop, so ``/healthz`` keeps
    answering within a second while tokens are being asked for, every token request is
    answered within the audit timeout (a token once its record is durable, else 503), and
    tokens flow again once the database answers."""
    from broker.cli.dev import DEV_AGENT, DEV_GATEWAY, DevTrustDomain
    from tests.revocation_kit import FORM, token_form

    server, relay, data_dir = served
    td = DevTrustDomain.load_or_create(data_dir)

    def ask() -> int:
        body = token_form(td, ISSUER, DEV_AGENT, DEV_GATEWAY)
        return httpx.post(f"{server.url}/token", content=body, headers=FORM,
                          timeout=60).status_code

    assert ask() == 200
    statuses: list[int] = []
    slowest_token = 0.0
    stop = threading.Event()

    def traffic() -> None:
        nonlocal slowest_token
        while not stop.is_set():
            started = time.monotonic()
            statuses.append(ask())
            slowest_token = max(slowest_token, time.monotonic() - started)

    workers = [threading.Thread(target=traffic, daemon=True) for _ in range(4)]
    relay.stall()
    try:
        for w in workers:
            w.start()
        time.sleep(0.3)  # requests now wait on the hung database
        slowest = 0.0
        for _ in range(20):  # 4 s and more: past the audit timeout (3 s)
            r, took = _timed_get(f"{server.url}/healthz")
            assert r.status_code == 200
            slowest = max(slowest, took)
            time.sleep(0.2)
        assert slowest < 1.0, f"/healthz took {slowest:.2f}s with token traffic in flight"
    finally:
        relay.resume()
        stop.set()
        for w in workers:
            w.join(timeout=60)
    assert statuses and set(statuses) <= {200, 503}
    assert 503 in statuses  # requests that waited past the audit timeout failed closed
    assert slowest_token < 3.0 + 1.5, f"a token request took {slowest_token:.2f}s"
    deadline = time.monotonic() + 30
    while ask() != 200:
        assert time.monotonic() < deadline, "tokens did not flow again"
        time.sleep(0.2)
