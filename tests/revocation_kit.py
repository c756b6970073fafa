"""Helpers shared by the revocation, introspection and replica tests."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlencode

import httpx
from sqlalchemy import create_engine, make_url, text

RS = "spiffe://dev.writ.local/services/ledger"
RS_OTHER = "spiffe://dev.writ.local/services/elsewhere"
TRUST_DOMAIN = "dev.writ.local"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    decoded: dict[str, Any] = json.loads(raw)
    return decoded


def form(**params: str) -> str:
    return urlencode(params)


class BearerSvid(httpx.Auth):
    """RFC 7662 §2.1 with a bearer credential: the resource server's own JWT-SVID."""

    def __init__(self, mint: Callable[[], str]) -> None:
        self._mint = mint

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._mint()}"
        yield request


# --- real servers on loopback ----------------------------------------------------------

BIN = Path(sys.executable).parent
GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_SPIFFE = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    sink: IO[str]

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush; what was durable stays, nothing else."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=20)


def writ_env(db_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WRIT_")}
    return {**env, "WRIT_DATABASE_URL": db_url, **extra}


def start_writ(data_dir: Path, env: dict[str, str], *, timeout_s: float = 60) -> Server:
    """``writ serve --dev`` on a free loopback port, ready when ``/readyz`` says so."""
    port = free_port()
    log = data_dir.parent / f"writ-{port}.log"
    sink = log.open("w")
    proc = subprocess.Popen(
        [str(BIN / "writ"), "serve", "--dev", "--data-dir", str(data_dir), "--port", str(port)],
        env=env, stdout=sink, stderr=subprocess.STDOUT,
    )
    server = Server(f"http://127.0.0.1:{port}", proc, log, sink)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{server.url}/readyz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait(timeout=20)
            sink.close()
            raise AssertionError(f"writ did not become ready:\n{log.read_text()[-4000:]}")
        time.sleep(0.1)


def stop_writ(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    server.sink.close()


def writ_cli(env: dict[str, str], data_dir: Path, *args: str) -> str:
    result = subprocess.run([str(BIN / "writ"), *args, "--data-dir", str(data_dir)], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def token_form(td: Any, issuer: str, agent: str, gateway: str, **extra: str) -> str:
    return urlencode({
        "grant_type": GRANT,
        "client_assertion_type": JWT_SPIFFE,
        "client_assertion": td.mint_svid(gateway, issuer),
        "subject_token": td.mint_svid(agent, issuer),
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "requested_token_type": "urn:ietf:params:oauth:token-type:txn_token",
        "audience": "dev.writ.local",
        "scope": "demo.read",
        **extra,
    })


@dataclass
class Outcome:
    url: str
    status: int | None  # None: no answer (connection refused or reset)
    jti: str | None


async def hammer(urls: list[str], body: str, *, total: int, concurrency: int,
                 on_answer: Callable[[Outcome], None] | None = None,
                 timeout_s: float = 60) -> list[Outcome]:
    """``total`` POST /token requests spread over ``urls``, at most ``concurrency`` in
    flight; every answer is recorded, a missing answer too."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    gate = asyncio.Semaphore(concurrency)
    outcomes: list[Outcome] = []
    async with httpx.AsyncClient(limits=limits, timeout=timeout_s) as http:

        async def one(i: int) -> None:
            url = urls[i % len(urls)]
            async with gate:
                try:
                    r = await http.post(f"{url}/token", content=body, headers=FORM)
                except httpx.HTTPError:
                    outcome = Outcome(url, None, None)
                else:
                    ok = r.status_code == 200
                    jti = claims_of(r.json()["access_token"])["jti"] if ok else None
                    outcome = Outcome(url, r.status_code, jti)
            outcomes.append(outcome)
            if on_answer is not None:
                on_answer(outcome)

        await asyncio.gather(*(one(i) for i in range(total)))
    return outcomes


@contextmanager
def pg_database(base_url: str) -> Iterator[str]:
    """A database of its own on the shared server, dropped afterwards: LISTEN/NOTIFY and
    ``ALLOW_CONNECTIONS`` are per database, so nothing reaches other tests."""
    name = f"writ_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(base_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def audited_jtis(db_url: str) -> dict[str, int]:
    """jti -> how many ``issued`` records name it."""
    from broker.db import make_engine

    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT jti, count(*) FROM audit_records WHERE decision = 'issued' "
                "AND jti IS NOT NULL GROUP BY jti")).all()
    finally:
        engine.dispose()
    return {jti: n for jti, n in rows}
