"""A tool URL whose host is an IPv4 address in another form than a.b.c.d (octal, hex,
short, one number) is refused as a 4xx at the admin API and in the CLI, never a 500;
nothing is resolved, connected, stored or audited, and the process keeps serving."""

from __future__ import annotations

import socket
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from broker.audit.writer import AuditRecord
from broker.cli.dev import DevTrustDomain
from broker.tools.fetch import ToolFetchError
from tests.admin.test_admin_api import bearer, issue, root  # noqa: F401  (fixtures)
from tests.conftest import FrozenClock
from tests.grants.test_token_endpoint import post_token, token_params

HOSTS = ["0177.0.0.1", "0177.1", "0x7f.1", "0x7f000001", "127.1", "2130706433",
         "127.000.000.001", "127.0.0.1.", "0xa9.0xfe.0xa9.0xfe", "2852039166", "256.1.1.1"]
DOC = {"name": "t", "endpoint": "https://mail.example/api", "audience": "https://mail.example",
       "actions": {"send": {"risk": "low"}}, "scopes": ["demo.read"], "tags": ["demo"]}


@pytest.fixture
def no_resolving(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    calls: list[Any] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        raise AssertionError("nothing may be resolved")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return calls


def admin_rows(engine: Engine) -> list[AuditRecord]:
    with Session(engine) as session:
        return list(session.exec(select(AuditRecord).where(col(AuditRecord.kind) == "admin")))


@pytest.mark.parametrize("host", HOSTS)
def test_register_by_url_is_refused(host: str, client: TestClient, root: str,  # noqa: F811
                                    engine: Engine, no_resolving: list[Any],
                                    seeded: DevTrustDomain, clock: FrozenClock) -> None:
    url = f"https://{host}/mail.json"
    r = client.post("/v1/tools", json={"url": url}, headers=bearer(root))
    assert r.status_code == 422, r.text
    assert r.json() == {
        "error": "invalid_request",
        "error_description": "tool metadata could not be fetched (url_ipv4_not_canonical): a "
        "tool URL's IPv4 address must be four decimal numbers without leading zeros (a.b.c.d)"}
    assert no_resolving == []
    assert admin_rows(engine) == []
    listed = client.get("/v1/tools", headers=bearer(root)).json()
    assert url not in {t["tool_id"] for t in listed}
    assert post_token(client, token_params(seeded, clock())).status_code == 200


@pytest.mark.parametrize("host", HOSTS[:6])
def test_pinning_such_a_tool_id_is_refused(host: str, client: TestClient,
                                           root: str,  # noqa: F811
                                           engine: Engine) -> None:
    tool_id = f"https://{host}/mail.json"
    for r in (client.post("/v1/tools", json={"document": {**DOC, "tool_id": tool_id}},
                          headers=bearer(root)),
              client.put(f"/v1/tools/{quote(tool_id, safe='')}",
                         json={"document": {**DOC, "tool_id": tool_id}},
                         headers=bearer(root))):
        assert 400 <= r.status_code < 500, r.text
        assert r.json()["error"] in ("invalid_request", "not_found")
    assert admin_rows(engine) == []


@pytest.mark.parametrize("host", ["0177.0.0.1", "0x7f.1", "127.1", "2130706433"])
def test_the_fetcher_refuses_before_connecting(host: str, client: TestClient,
                                               no_resolving: list[Any]) -> None:
    fetcher = client.app.state.broker.tool_fetcher  # type: ignore[attr-defined]
    with pytest.raises(ToolFetchError) as caught:
        fetcher.fetch(f"https://{host}/mail.json")
    assert caught.value.reason == "url_ipv4_not_canonical"
    assert no_resolving == []
