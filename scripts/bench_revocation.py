"""Measure how long a revocation made through one Writ replica takes to be honoured by another.

    python scripts/bench_revocation.py --postgres-url URL [--rounds N] [--out FILE]

It creates a PostgreSQL database of its own on that server (dropped at the end), starts two
``writ serve --dev`` replicas A and B on loopback ports with one issuer, and for each round:

- ``jti``: mints a token at B, revokes its ``jti`` through A's ``POST /v1/revocations``, then
  asks B's ``POST /introspect`` until it answers ``active: false``;
- ``kill switch``: revokes the agent through A (which suspends it), then asks B's ``POST
  /token`` until it refuses; the agent is resumed through A before the next round.

Each time runs from sending the request to A until the first answer of B that honours the
change: it includes A's own work (the write, its audit record), one request to B (about a
millisecond on loopback) and the polling step (2 ms).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from urllib.parse import urlencode

import httpx

BIN = Path(sys.executable).parent
ISSUER = "http://writ.bench.test"
RS = "spiffe://dev.writ.local/services/bench"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
POLL_S = 0.002


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(data: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    with (data.parent / f"writ-{port}.log").open("wb") as log:
        proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            [str(BIN / "writ"), "serve", "--dev", "--data-dir", str(data), "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("writ serve did not become ready")


def until(predicate: Callable[[], bool], timeout_s: float = 5.0,
          started: float | None = None) -> float:
    started = time.monotonic() if started is None else started
    while not predicate():
        if time.monotonic() - started > timeout_s:
            raise RuntimeError(f"not honoured within {timeout_s}s")
        time.sleep(POLL_S)
    return time.monotonic() - started


def summary(name: str, values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    p95 = ms[max(0, round(0.95 * len(ms)) - 1)]
    return (f"| {name} | {len(ms)} | {ms[0]:.1f} | {statistics.median(ms):.1f} | {p95:.1f} "
            f"| {ms[-1]:.1f} |")


def run(base_url: str, rounds: int) -> list[str]:
    from sqlalchemy import create_engine, make_url, text

    from broker.cli.dev import DEV_AGENT, DEV_GATEWAY, DevTrustDomain

    name = f"writ_bench_{uuid.uuid4().hex[:10]}"
    admin_db = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin_db.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(base_url).set(database=name).render_as_string(hide_password=False)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="writ-revocation-") as tmp:
            data = Path(tmp) / "data"
            env = {k: v for k, v in os.environ.items() if not k.startswith("WRIT_")}
            env.update(WRIT_DATABASE_URL=url, WRIT_ISSUER=ISSUER)
            proc_a, a = start(data, env)
            procs.append(proc_a)
            proc_b, b = start(data, env)
            procs.append(proc_b)
            td = DevTrustDomain.load_or_create(data)
            token = subprocess.run(  # noqa: S603 - fixed argv, no shell
                [str(BIN / "writ"), "admin-tokens", "create", "--name", "bench",
                 "--scope", "revocations:write", "--scope", "resource-servers:write",
                 "--scope", "agents:write", "--data-dir", str(data)],
                env=env, capture_output=True, text=True, check=True).stdout.strip()
            admin = {"Authorization": f"Bearer {token}"}
            httpx.post(f"{a}/v1/resource-servers", headers=admin,
                       json={"client_id": RS, "audiences": ["dev.writ.local"]}).raise_for_status()
            http = httpx.Client(timeout=10)

            def mint() -> httpx.Response:
                return http.post(f"{b}/token", headers=FORM, content=urlencode({
                    "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
                    "client_assertion_type":
                        "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe",
                    "client_assertion": td.mint_svid(DEV_GATEWAY, ISSUER),
                    "subject_token": td.mint_svid(DEV_AGENT, ISSUER),
                    "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
                    "requested_token_type": "urn:ietf:params:oauth:token-type:txn_token",
                    "audience": "dev.writ.local", "scope": "demo.read"}))

            def inactive(tok: str) -> bool:
                r = http.post(f"{b}/introspect", content=urlencode({"token": tok}),
                              headers={**FORM, "Authorization":
                                       f"Bearer {td.mint_svid(RS, ISSUER)}"})
                return r.json()["active"] is False

            until(lambda: http.post(f"{b}/introspect", content="token=x", headers={
                **FORM, "Authorization": f"Bearer {td.mint_svid(RS, ISSUER)}"}
            ).status_code == 200)
            jti_times, kill_times = [], []
            for _ in range(rounds):
                tok = mint().json()["access_token"]
                jti = json.loads(_payload(tok))["jti"]
                sent = time.monotonic()
                http.post(f"{a}/v1/revocations", headers=admin,
                          json={"kind": "jti", "value": jti}).raise_for_status()
                jti_times.append(until(partial(inactive, tok), started=sent))

                sent = time.monotonic()
                http.post(f"{a}/v1/revocations", headers=admin,
                          json={"kind": "agent", "value": DEV_AGENT}).raise_for_status()
                kill_times.append(until(lambda: mint().status_code == 400, started=sent))
                http.post(f"{a}/v1/agents/{DEV_AGENT}/resume",
                          headers=admin).raise_for_status()
                until(lambda: mint().status_code == 200)
            http.close()
            return [
                "| change made at replica A | rounds | min ms | median ms | p95 ms | max ms |",
                "|---|--:|--:|--:|--:|--:|",
                summary("jti revoked → B's /introspect says inactive", jti_times),
                summary("agent revoked (kill switch) → B's /token refuses", kill_times),
            ]
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)
        with admin_db.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin_db.dispose()


def _payload(token: str) -> bytes:
    import base64

    part = token.split(".")[1]
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres-url", required=True,
                        help="a PostgreSQL server URL; a database of its own is created there")
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--out", type=Path, default=None,
                        help="Markdown file whose revocation section is rewritten")
    args = parser.parse_args(argv)
    lines = run(args.postgres_url, args.rounds)
    command = " ".join(["python", "scripts/bench_revocation.py",
                        *(a if "://" not in a else "<postgres-url>" for a in
                          (argv if argv is not None else sys.argv[1:]))])
    section = "\n".join([
        "<!-- bench:revocation -->",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}:", "", f"    {command}", "",
        *lines, "<!-- /bench:revocation -->"])
    print("\n".join(lines))
    if args.out is not None:
        text = args.out.read_text() if args.out.exists() else ""
        pattern = re.compile(r"<!-- bench:revocation -->.*?<!-- /bench:revocation -->", re.DOTALL)
        text = pattern.sub(lambda _: section, text) if pattern.search(text) else (
            text.rstrip("\n") + "\n\n" + section + "\n")
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
