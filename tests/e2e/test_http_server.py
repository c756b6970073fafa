"""Against a real ``writ serve`` on loopback (TestClient bypasses the server): request
headers are bounded, and uvicorn's own forwarded-header handling is off, so a local caller
cannot name its address with ``X-Forwarded-For``."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from broker.cli.dev import DEV_AGENT, DEV_GATEWAY, DevTrustDomain
from tests.revocation_kit import FORM, Server, claims_of, start_writ, stop_writ, token_form

pytestmark = pytest.mark.e2e


def plain_env(**extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("WRIT_")}, **extra}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    data_dir = tmp_path_factory.mktemp("http") / "data"
    server = start_writ(data_dir, plain_env())
    try:
        yield server, data_dir
    finally:
        stop_writ(server)


def raw_request(url: str, head: bytes) -> bytes:
    """Send one request head as given; return what the server answers (or b"")."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        with contextlib.suppress(OSError):  # the server may answer and close first
            sock.sendall(head)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except OSError:
            pass
    return b"".join(chunks)


HEADS = {
    "one-64k-header": b"X-Big: " + b"a" * 64 * 1024 + b"\r\n",
    "one-17k-header": b"X-Big: " + b"a" * 17 * 1024 + b"\r\n",
    "100-headers": b"".join(b"X-H%d: v\r\n" % i for i in range(100)),
    "many-small-headers": b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 400) for i in range(48)),
}


@pytest.mark.parametrize("extra", HEADS.values(), ids=HEADS)
@pytest.mark.parametrize("path", [b"/token", b"/healthz"])
def test_large_request_heads_are_refused(extra: bytes, path: bytes,
                                         served: tuple[Server, Path]) -> None:
    server, _ = served
    answer = raw_request(server.url, b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Length: 0\r\nConnection: close\r\n" + extra + b"\r\n")
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 431 Request Header Fields Too Large", answer[:200]
    body = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert body["error"] == "invalid_request"
    assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200  # still serving


def test_a_huge_header_is_cut_off_while_it_arrives(served: tuple[Server, Path]) -> None:
    """httptools keeps no bound of its own: writ serve's protocol answers 431 once the head
    passes its bound, long before 64 MiB arrive (broker/cli/serving.py)."""
    server, _ = served
    started = time.monotonic()
    answer = raw_request(server.url, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "
                         + b"a" * 64 * 1024 * 1024 + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), answer[:200]
    assert b'"error": "invalid_request"' in answer
    assert time.monotonic() - started < 8  # unbounded, httptools takes about 19 s here
    assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200


def test_bodies_and_pipelined_requests_are_not_counted_as_heads(
        served: tuple[Server, Path]) -> None:
    server, _ = served
    body = b"grant_type=x&pad=" + b"b" * 60_000
    head = (b"POST /token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-"
            b"urlencoded\r\nContent-Length: " + str(len(body)).encode() + b"\r\n")
    # head and a 60 KB body in one write: an answer from the app, not 431
    answer = raw_request(server.url, head + b"Connection: close\r\n\r\n" + body)
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
    # two pipelined requests in one write, the first with its body
    answer = raw_request(server.url, head + b"\r\n" + body + b"GET /healthz HTTP/1.1\r\n"
                         b"Host: x\r\nConnection: close\r\n\r\n")
    assert answer.count(b"HTTP/1.1 ") == 2 and b"431" not in answer, answer[:400]


def test_uvicorn_does_not_trust_forwarded_headers(served: tuple[Server, Path]) -> None:
    server, data_dir = served
    td = DevTrustDomain.load_or_create(data_dir)
    for header in ({"X-Forwarded-For": "203.0.113.9"}, {"Forwarded": "for=203.0.113.9"},
                   {"X-Real-IP": "203.0.113.9"}):
        r = httpx.post(f"{server.url}/token",
                       content=token_form(td, server.url, DEV_AGENT, DEV_GATEWAY),
                       headers={**FORM, **header}, timeout=30)
        assert r.status_code == 200, r.text
        rctx = claims_of(r.json()["access_token"])["rctx"]
        assert (rctx["gateway_ip"], rctx["gateway_ip_source"]) == ("127.0.0.1", "peer")


def test_a_trusted_proxy_names_the_gateway(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = start_writ(data_dir, plain_env(WRIT_TRUSTED_PROXIES='["127.0.0.0/8"]'))
    try:
        td = DevTrustDomain.load_or_create(data_dir)
        for value, ip, source in (("6.6.6.6, 203.0.113.9", "203.0.113.9", "forwarded"),
                                  ("not-an-address", "127.0.0.1", "peer")):
            r = httpx.post(f"{server.url}/token",
                           content=token_form(td, server.url, DEV_AGENT, DEV_GATEWAY),
                           headers={**FORM, "X-Forwarded-For": value}, timeout=30)
            assert r.status_code == 200, r.text
            rctx = claims_of(r.json()["access_token"])["rctx"]
            assert (rctx["gateway_ip"], rctx["gateway_ip_source"]) == (ip, source)
    finally:
        stop_writ(server)
