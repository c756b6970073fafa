"""Fetching tool metadata for real: an HTTPS server on loopback with a throwaway CA, the
loopback allow-list turned on for these tests only, and an injected resolver for names
that resolve to special-use addresses (tests/vectors/tool_fetches.json). Then the whole
life of a tool registered by URL in a running broker: registration, the token path reading
only the snapshot, background refresh, fail-closed staleness and recovery."""

from __future__ import annotations

import contextlib
import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from broker.admin.tokens import ALL_SCOPES, AdminTokenCreate, create_admin_token
from broker.app import create_app
from broker.audit.writer import AuditRecord
from broker.cli.dev import DEV_AGENT, DevTrustDomain
from broker.settings import Settings
from broker.tools.fetch import ToolFetcher, ToolFetchError
from broker.tools.settings import ToolSettings
from registry import store
from registry.charter import Charter, ToolGrant
from registry.models import AgentUpdate
from tests.conftest import ISSUER, FrozenClock
from tests.grants.test_token_endpoint import post_token, token_params
from tests.tls import Pki, _TlsServer, make_pki

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "tool_fetches.json").read_text())


def document(tool_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "tool_id": tool_id, "name": "mail", "endpoint": "https://mail.test/api",
        "audience": "https://mail.test", "actions": {"send": {"risk": "low"}},
        "scopes": ["demo.read"], "tags": ["demo"], **extra,
    }


@dataclass
class Route:
    serve: str = "document"  # document | redirect | status | chunked | unframed | trickle |
    #                           stall | stall_headers | raw
    status: int = 200
    content_type: str | None = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    tool_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    pad: int = 0
    location: str = ""
    body: str = ""


class ToolServer:
    """The metadata host: what each path answers, and how many connections it took."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.connections = 0
        self.port = 0

    def body(self, route: Route, host: str, path: str) -> bytes:
        if route.serve == "raw":
            return route.body.encode()
        doc = document(route.tool_id or f"https://{host}{path}", **route.extra)
        if route.pad:
            doc["description"] = "x" * min(route.pad, 1024)
            doc["padding"] = "x" * route.pad  # invalid too, but the size refuses it first
        return json.dumps(doc).encode()


def _handler(server: ToolServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            route = server.routes.get(self.path, Route(serve="status", status=404))
            with contextlib.suppress(OSError):  # the client gave up, as it should
                self._answer(route)

        def _answer(self, route: Route) -> None:
            if route.serve == "stall_headers":
                time.sleep(1.5)
                return
            body = server.body(route, self.headers.get("Host", ""), self.path)
            self.send_response(route.status)
            if route.serve == "redirect":
                self.send_header("Location", route.location)
            if route.content_type:
                self.send_header("Content-Type", route.content_type)
            for name, value in route.headers.items():
                self.send_header(name, value)
            if route.serve == "chunked":
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for i in range(0, len(body), 1000):
                    part = body[i:i + 1000]
                    self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
                return
            if route.serve != "unframed":
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if route.serve == "stall":
                time.sleep(1.5)
                return
            if route.serve == "trickle":
                for i in range(0, len(body), 16):
                    self.wfile.write(body[i:i + 16])
                    self.wfile.flush()
                    time.sleep(0.05)
                    if i > 16 * 40:
                        return
                return
            if route.status not in (204, 304):
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    return Handler


@contextmanager
def tool_server(pki: Pki) -> Iterator[tuple[ToolServer, str]]:
    """A TLS metadata host on 127.0.0.1; yields it with the CA file's path."""
    import tempfile

    state = ToolServer()
    with tempfile.TemporaryDirectory(prefix="writ-tools-") as tmp:
        ca, cert, key = pki.write(tmp)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)

        class Counting(_TlsServer):
            def finish_request(self, request: Any, client_address: Any) -> None:
                state.connections += 1
                super().finish_request(request, client_address)

        httpd = Counting(("127.0.0.1", 0), _handler(state), context)
        state.port = httpd.server_address[1]
        thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                  daemon=True)
        thread.start()
        try:
            yield state, str(ca)
        finally:
            httpd.shutdown()
            httpd.server_close()
            thread.join()


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki(dns_names=("localhost", "tools.test"), ips=("127.0.0.1",))


@pytest.fixture
def server(pki: Pki) -> Iterator[tuple[ToolServer, str]]:
    with tool_server(pki) as running:
        yield running


def fetcher(ca: str, *, allow_loopback: bool = True,
            resolver: Callable[[str, int], Sequence[str]] | None = None,
            clock: Callable[[], float] = time.time) -> ToolFetcher:
    settings = ToolSettings(
        allowed_networks=["127.0.0.1/32"] if allow_loopback else [],
        connect_timeout_s=2.0, read_timeout_s=0.3, fetch_deadline_s=1.0,
    )
    kwargs: dict[str, Any] = {} if resolver is None else {"resolver": resolver}
    return ToolFetcher(settings, ssl_context=ssl.create_default_context(cafile=ca),
                       clock=clock, **kwargs)


@pytest.mark.parametrize("v", VECTORS, ids=[v["id"] for v in VECTORS])
def test_fetch_vector(v: dict[str, Any], server: tuple[ToolServer, str]) -> None:
    state, ca = server
    host = v.get("host", "127.0.0.1")
    url = v.get("url", f"https://{host}:{state.port}/tool.json")
    route_fields = {k: v[k] for k in ("serve", "status", "headers", "tool_id", "extra", "pad",
                                      "location", "body") if k in v}
    if "content_type" in v:
        route_fields["content_type"] = v["content_type"]
    state.routes["/tool.json"] = Route(**route_fields)
    asked: list[str] = []

    def resolver(name: str, port: int) -> Sequence[str]:
        asked.append(name)
        answer = v["resolve"]
        if answer is None:
            raise OSError("Name or service not known")
        return list(answer)

    f = fetcher(ca, allow_loopback=v.get("allow_loopback", True),
                resolver=resolver if "resolve" in v else None)
    try:
        if v.get("ok"):
            fetched = f.fetch(url)
            assert fetched.document.tool_id == url
        else:
            with pytest.raises(ToolFetchError) as caught:
                f.fetch(url)
            assert caught.value.reason == v["reason"]
            if "message" in v:
                assert str(caught.value) == v["message"]
            assert "s3cr3t" not in str(caught.value)
    finally:
        f.close()
    if "connects" in v:
        assert state.connections == v["connects"]
    if v.get("serve") == "redirect":
        assert asked == [] or set(asked) == {host}  # the redirect target was never looked up
        assert state.connections == 1


def test_every_connection_is_checked(server: tuple[ToolServer, str]) -> None:
    """The answer of the resolver is checked on each new connection, not once per name:
    the second answer (a rebinding to a private address) is refused."""
    state, ca = server
    state.routes["/tool.json"] = Route()
    answers = [["127.0.0.1"], ["10.1.1.1"]]
    f = fetcher(ca, resolver=lambda host, port: answers.pop(0))
    try:
        url = f"https://tools.test:{state.port}/tool.json"
        assert f.fetch(url).document.tool_id == url
        with pytest.raises(ToolFetchError) as caught:
            f.fetch(url)  # the server closed the first connection: a new one is made
        assert caught.value.reason == "address_blocked"
    finally:
        f.close()
    assert state.connections == 1


def test_a_resolver_that_hangs_is_cut_off(server: tuple[ToolServer, str]) -> None:
    """getaddrinfo has no timeout of its own: the name's resolution is bounded by the
    connect timeout, the fetch fails with ``timeout``, nothing is connected, and the next
    fetch works."""
    state, ca = server
    state.routes["/tool.json"] = Route()
    stuck = threading.Event()

    def resolver(host: str, port: int) -> Sequence[str]:
        if host == "stuck.test":
            stuck.wait(30)  # a DNS server that never answers
        return ["127.0.0.1"]

    settings = ToolSettings(allowed_networks=["127.0.0.1/32"], connect_timeout_s=0.3,
                            read_timeout_s=0.3, fetch_deadline_s=1.0)
    f = ToolFetcher(settings, ssl_context=ssl.create_default_context(cafile=ca),
                    resolver=resolver)
    try:
        started = time.monotonic()
        with pytest.raises(ToolFetchError) as caught:
            f.fetch(f"https://stuck.test:{state.port}/tool.json")
        assert time.monotonic() - started < 3.0  # the bound is 0.3 s, not the resolver's 30
        assert caught.value.reason == "timeout"
        assert str(caught.value) == "resolving stuck.test took longer than 0.3 s"
        assert state.connections == 0
        url = f"https://tools.test:{state.port}/tool.json"
        assert f.fetch(url).document.tool_id == url
    finally:
        stuck.set()
        f.close()


def test_cache_control_sets_the_times(server: tuple[ToolServer, str]) -> None:
    state, ca = server
    clock = FrozenClock(1000.0)
    state.routes["/a.json"] = Route(headers={"Cache-Control": "public, max-age=120"})
    state.routes["/b.json"] = Route(headers={"Cache-Control": "max-age=5"})
    state.routes["/c.json"] = Route(headers={"Cache-Control": "no-store"})
    f = fetcher(ca, clock=clock)
    try:
        base = f"https://127.0.0.1:{state.port}"
        times = [f.fetch(f"{base}/{p}.json").times for p in "abc"]
    finally:
        f.close()
    assert [(t.fetched_at, t.fresh_until, t.usable_until) for t in times] == [
        (1000.0, 1120.0, 1420.0),  # max-age within bounds; then max_stale_s (300)
        (1000.0, 1060.0, 1360.0),  # below cache_min_s (60)
        (1000.0, 1060.0, 1360.0),  # no-store: as short as allowed
    ]


# --- a tool registered by URL in a running broker ----------------------------------------


@pytest.fixture
def live(server: tuple[ToolServer, str], settings: Settings, engine: Engine,
         seeded: DevTrustDomain, clock: FrozenClock) -> Iterator[tuple[TestClient, ToolServer]]:
    state, ca = server
    tools = ToolSettings(allowed_networks=["127.0.0.1/32"], ca_file=Path(ca),
                         read_timeout_s=0.5, fetch_deadline_s=2.0)
    app = create_app(settings.model_copy(update={"tools": tools}), engine=engine, clock=clock)
    with TestClient(app, base_url=ISSUER) as tc:
        # the refresher is driven by hand below, under the frozen clock
        app.state.broker.tool_refresher.stop()
        yield tc, state


def test_registered_tool_lifecycle(live: tuple[TestClient, ToolServer], engine: Engine,
                                   seeded: DevTrustDomain, clock: FrozenClock) -> None:
    client, state = live
    broker = client.app.state.broker
    url = f"https://127.0.0.1:{state.port}/mail.json"
    state.routes["/mail.json"] = Route(headers={"Cache-Control": "max-age=120"})
    with Session(engine) as session:
        root = create_admin_token(session, AdminTokenCreate(name="root", scopes=sorted(
            ALL_SCOPES)), now=clock(), by="test").token
        store.update_agent(session, DEV_AGENT, AgentUpdate(charter=Charter(
            purpose="mails", scopes=("demo.read",), tools=(ToolGrant(tool=url),))),
            now=clock(), by="test")
        session.commit()
    h = {"Authorization": f"Bearer {root}"}
    path = f"/v1/tools/{quote(url, safe='')}"

    r = client.post("/v1/tools", json={"url": url}, headers=h)
    assert r.status_code == 201, r.text
    t0 = clock()
    registered = r.json()
    assert {k: registered[k] for k in ("tool_id", "source", "fetched_at", "fresh_until",
                                       "usable_until", "created_by")} == {
        "tool_id": url, "source": "url", "fetched_at": t0, "fresh_until": t0 + 120,
        "usable_until": t0 + 420, "created_by": registered["created_by"]}
    assert registered["document"]["endpoint"] == "https://mail.test/api"
    connections = state.connections

    def ask() -> Any:
        details = json.dumps({"tool": url, "action": "send"})
        return post_token(client, token_params(seeded, clock(), request_details=details))

    # the token path reads the snapshot only: nothing is fetched
    for _ in range(3):
        r = ask()
        assert r.status_code == 200, r.text
        assert r.json()["tool_endpoint"] == "https://mail.test/api"
    assert state.connections == connections

    # not yet due (three quarters of 120 s): nothing happens
    clock.advance(80)
    assert broker.tool_refresher.run_once() == []
    # due: refreshed in the background; the new document reaches the snapshot
    state.routes["/mail.json"] = Route(headers={"Cache-Control": "max-age=120"},
                                       extra={"endpoint": "https://mail2.test/api"})
    clock.advance(15)
    assert broker.tool_refresher.run_once() == [url]
    # a new endpoint is held for a registrar (docs/tools.md): the previous one serves
    assert broker.snapshot.tools[url].endpoint == "https://mail.test/api"
    assert ask().json()["tool_endpoint"] == "https://mail.test/api"
    r = client.post(f"{path}/approve-change", headers=h, json={})
    assert r.status_code == 200, r.text
    assert broker.snapshot.tools[url].endpoint == "https://mail2.test/api"
    assert ask().json()["tool_endpoint"] == "https://mail2.test/api"
    with Session(engine) as session:
        reasons = [(r.reason, r.tool) for r in session.exec(
            select(AuditRecord).where(col(AuditRecord.kind) == "admin")
            .order_by(col(AuditRecord.seq)))]
    assert reasons[-3:] == [("tool.registered", url), ("tool.change_held", url),
                            ("tool.change_approved", url)]

    # the host fails: the last good document serves until its usable_until ...
    state.routes["/mail.json"] = Route(serve="status", status=500)
    refreshed_at = clock()
    clock.advance(130)  # past fresh_until
    assert broker.tool_refresher.run_once() == []
    assert ask().status_code == 200
    assert broker.tool_refresher.run_once() == []  # backing off: not even tried
    # ... and then the tool fails closed
    clock.advance(refreshed_at + 420 - clock())
    r = ask()
    assert (r.status_code, r.json()) == (503, {
        "error": "temporarily_unavailable",
        "error_description": "the tool's metadata is unavailable; try again later"})
    # the host recovers; after the backoff the next pass refreshes it
    state.routes["/mail.json"] = Route(headers={"Cache-Control": "max-age=120"},
                                       extra={"endpoint": "https://mail2.test/api"})
    clock.advance(10)
    assert broker.tool_refresher.run_once() == [url]
    assert ask().status_code == 200

    # registrars: show, refresh on demand, refuse a pin over a fetched tool, remove
    assert client.get(path, headers=h).json()["document"]["endpoint"] == "https://mail2.test/api"
    state.routes["/mail.json"] = Route(serve="redirect", status=302,
                                       location="https://169.254.169.254/")
    r = client.post(f"{path}/refresh", headers=h)
    assert (r.status_code, r.json()["error"]) == (422, "invalid_request")
    assert r.json()["error_description"].startswith(
        "tool metadata could not be fetched (redirect_refused)")
    r = client.put(path, json={"document": document(url)}, headers=h)
    assert r.status_code == 409
    assert client.delete(path, headers=h).status_code == 204
    r = ask()
    assert (r.status_code, r.json()["error"]) == (400, "access_denied")
    assert client.get(path, headers=h).status_code == 404


def test_registration_refuses_what_the_fetch_refuses(live: tuple[TestClient, ToolServer],
                                                     engine: Engine, clock: FrozenClock) -> None:
    client, state = live
    with Session(engine) as session:
        root = create_admin_token(session, AdminTokenCreate(name="root", scopes=sorted(
            ALL_SCOPES)), now=clock(), by="test").token
        session.commit()
    h = {"Authorization": f"Bearer {root}"}
    state.routes["/big.json"] = Route(pad=6000)
    url = f"https://127.0.0.1:{state.port}/big.json"
    r = client.post("/v1/tools", json={"url": url}, headers=h)
    assert r.status_code == 422
    assert r.json() == {"error": "invalid_request", "error_description":
                        "tool metadata could not be fetched (too_large): the document is "
                        "larger than 5120 bytes"}
    # nothing was stored, and errors are not cached: a fixed document registers at once
    state.routes["/big.json"] = Route()
    assert client.post("/v1/tools", json={"url": url}, headers=h).status_code == 201
