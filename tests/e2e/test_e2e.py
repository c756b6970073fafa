"""End to end over real HTTP on loopback: ``writ serve --dev`` as a subprocess (uvicorn),
``writ demo`` as the gateway and downstream service, and the durable audit it leaves."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from broker.audit.writer import verify_chain
from broker.db import make_engine

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path, db_url: str) -> Iterator[tuple[str, Path, str]]:
    port = free_port()
    env = {**os.environ, "WRIT_DATABASE_URL": db_url}
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [
            str(BIN / "writ"),
            "serve",
            "--dev",
            "--data-dir",
            str(tmp_path / "data"),
            "--port",
            str(port),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.2)
        yield url, tmp_path / "data", db_url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def test_demo_flow_over_real_http(server: tuple[str, Path, str]) -> None:
    url, data_dir, db_url = server
    result = subprocess.run(
        [str(BIN / "writ"), "demo", "--url", url, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "[3] Writ issued a Txn-Token" in out
    assert "[4] downstream service verified it offline" in out
    assert '"sub": "spiffe://dev.writ.local/agents/demo/assistant"' in out
    assert "eyJ" not in out  # the demo never prints a whole token

    engine = make_engine(db_url)
    try:
        verdict = verify_chain(engine)
        assert verdict.ok and verdict.count >= 1
    finally:
        engine.dispose()


def test_demo_fails_against_no_server(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    from broker.cli.dev import DevTrustDomain

    DevTrustDomain.load_or_create(data)
    result = subprocess.run(
        [
            str(BIN / "writ"),
            "demo",
            "--url",
            f"http://127.0.0.1:{free_port()}",
            "--data-dir",
            str(data),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "cannot read Writ's metadata" in result.stderr


def test_dev_helpers_refused_outside_dev_mode(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            str(BIN / "writ"),
            "dev",
            "svid",
            "--data-dir",
            str(tmp_path),
            "--spiffe-id",
            "spiffe://dev.writ.local/x",
            "--audience",
            "a",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2  # a usage error (tests/cli/test_cli_data_dir.py)
    assert "dev mode is not on" in result.stderr
    assert result.stdout == ""
