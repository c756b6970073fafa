"""One spelling per identity (docs/security.md#one-spelling-per-spiffe-id): SPIFFE IDs with
control characters, non-ASCII characters, a trust domain longer than 255 bytes or a
non-canonical spelling are malformed everywhere: 422 at the admin API (bodies, URL paths,
audit filters) before any lookup, a usage error in the CLI, and never a second agent or an
action on the real one."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import typer
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from broker.admin.tokens import ALL_SCOPES, AdminTokenCreate, create_admin_token
from broker.audit.writer import AuditRecord
from broker.cli.dev import DEV_AGENT, DEV_GATEWAY
from tests.conftest import FrozenClock

TD = "dev.writ.local"

# each a (id, transform of a canonical SPIFFE ID)
HOSTILE: list[tuple[str, Any]] = [
    ("newline", lambda s: s + "\n"),
    ("crlf", lambda s: s + "\r\n"),
    ("carriage-return", lambda s: s + "\r"),
    ("nul", lambda s: s + "\x00"),
    ("tab", lambda s: s + "\t"),
    ("escape", lambda s: s + "\x1b[0m"),
    ("delete", lambda s: s + "\x7f"),
    ("newline-inside", lambda s: s.replace("/agents/", "/agents\n/").replace(
        "/gateway/", "/gateway\n/")),
    ("zero-width-space", lambda s: s + "\u200b"),
    ("non-ascii", lambda s: s.replace("demo", "d\u00e9mo")),
    ("cyrillic-trust-domain", lambda s: s.replace("dev.", "d\u0435v.")),
    ("long-trust-domain", lambda s: s.replace(TD, "a" * 250 + "." + TD)),
    ("trailing-slash", lambda s: s + "/"),
    ("dot-dot", lambda s: s + "/../" + s.rsplit("/", 1)[1]),
    ("dot", lambda s: s.replace("/demo/", "/./demo/").replace("/gateway/", "/./gateway/")),
    ("empty-segment", lambda s: s.replace("/demo", "//demo")),
    ("uppercase-trust-domain", lambda s: s.replace(TD, TD.upper())),
    ("uppercase-scheme", lambda s: "SPIFFE" + s[len("spiffe"):]),
    ("percent-encoded", lambda s: s + "%0A"),
    ("trailing-space", lambda s: s + " "),
    ("port", lambda s: s.replace(TD, TD + ":443")),
]
IDS = [h[0] for h in HOSTILE]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def path_of(value: str) -> str:
    # every byte encoded, '/' and '.' too: the client never normalises the hostile path
    return quote(value, safe="").replace(".", "%2E")


@pytest.fixture
def root(engine: Engine, clock: FrozenClock) -> str:
    with Session(engine) as session:
        issued = create_admin_token(session, AdminTokenCreate(
            name="root", scopes=sorted(ALL_SCOPES)), now=clock(), by="test")
        session.commit()
    return issued.token


def admin_reasons(engine: Engine) -> list[str]:
    with Session(engine) as session:
        stmt = select(AuditRecord).where(col(AuditRecord.kind) == "admin")
        return [r.reason for r in session.exec(stmt)]


def assert_malformed(r: Any) -> None:
    assert r.status_code == 422, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert set(body) == {"error", "error_description"}
    assert body["error"] == "invalid_request"
    assert "\n" not in body["error_description"] and "\x00" not in body["error_description"]


@pytest.mark.parametrize(("name", "make"), HOSTILE, ids=IDS)
def test_enrolling_a_hostile_id_is_422_and_writes_nothing(
    name: str, make: Any, client: TestClient, root: str, engine: Engine
) -> None:
    h = bearer(root)
    body = {"spiffe_id": make(DEV_AGENT), "owner": "o",
            "charter": {"purpose": "p", "scopes": ["demo.read"], "max_ttl_s": 60}}
    assert_malformed(client.post("/v1/agents", headers=h, json=body))
    gw = {"client_id": make(DEV_GATEWAY), "agent_namespaces": ["spiffe://dev.writ.local/x/**"]}
    assert_malformed(client.post("/v1/gateways", headers=h, json=gw))
    rs = {"client_id": make(DEV_GATEWAY), "audiences": [TD]}
    assert_malformed(client.post("/v1/resource-servers", headers=h, json=rs))
    # nothing enrolled, nothing audited, and the process still serves
    assert [a["spiffe_id"] for a in client.get("/v1/agents", headers=h).json()] == [DEV_AGENT]
    assert [g["client_id"] for g in client.get("/v1/gateways", headers=h).json()] == [
        DEV_GATEWAY]
    assert admin_reasons(engine) == []
    assert client.get(f"/v1/agents/{DEV_AGENT}", headers=h).status_code == 200


@pytest.mark.parametrize(("name", "make"), HOSTILE, ids=IDS)
def test_a_hostile_id_in_the_url_never_reaches_the_real_agent(
    name: str, make: Any, client: TestClient, root: str, engine: Engine
) -> None:
    h = bearer(root)
    agent = path_of(make(DEV_AGENT))
    gateway = path_of(make(DEV_GATEWAY))
    for method, url in [
        ("GET", f"/v1/agents/{agent}"),
        ("PATCH", f"/v1/agents/{agent}"),
        ("POST", f"/v1/agents/{agent}/suspend"),
        ("POST", f"/v1/agents/{agent}/resume"),
        ("DELETE", f"/v1/agents/{agent}"),
        ("GET", f"/v1/gateways/{gateway}"),
        ("PATCH", f"/v1/gateways/{gateway}"),
        ("POST", f"/v1/gateways/{gateway}/suspend"),
        ("DELETE", f"/v1/gateways/{gateway}"),
        ("GET", f"/v1/resource-servers/{gateway}"),
        ("DELETE", f"/v1/resource-servers/{gateway}"),
        ("GET", f"/v1/audit?agent={agent}"),
        ("GET", f"/v1/audit?gateway={gateway}"),
    ]:
        kwargs = {"json": {"description": "changed"}} if method == "PATCH" else {}
        assert_malformed(client.request(method, url, headers=h, **kwargs))
    # the real agent and gateway are untouched, and nothing was audited
    real = client.get(f"/v1/agents/{DEV_AGENT}", headers=h).json()
    assert (real["status"], real["description"]) == ("active", "sample agent")
    assert client.get(f"/v1/gateways/{DEV_GATEWAY}", headers=h).json()["status"] == "active"
    assert admin_reasons(engine) == []


@pytest.mark.parametrize("name", [
    "dev.writ.local\n", "dev.writ.local\x00", "DEV.writ.local", "dev.writ.local/",
    "d\u00e9v.writ.local", "a" * 256, "dev.writ.local:8443", "spiffe://dev.writ.local",
])
def test_a_hostile_trust_domain_in_the_url_is_422(name: str, client: TestClient,
                                                   root: str) -> None:
    h = bearer(root)
    for method in ("GET", "DELETE"):
        assert_malformed(client.request(method, f"/v1/trust-domains/{path_of(name)}",
                                        headers=h))
    assert client.get(f"/v1/trust-domains/{TD}", headers=h).status_code == 200


def test_a_control_character_in_any_admin_path_is_422_before_authentication(
    client: TestClient,
) -> None:
    # nothing is looked up, not even the admin token: the path itself is malformed
    for url in (f"/v1/agents/{path_of(DEV_AGENT)}%0A", "/v1/admin-tokens/abc%00",
                "/v1/tools/https%3A%2F%2Ftools.example%2Fx%0D"):
        assert_malformed(client.get(url))


def test_canonical_ids_still_work_percent_encoded(client: TestClient, root: str) -> None:
    r = client.get(f"/v1/agents/{path_of(DEV_AGENT)}", headers=bearer(root))
    assert r.status_code == 200
    assert r.json()["spiffe_id"] == DEV_AGENT


# --- the CLI ---------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "make"), HOSTILE[:8] + HOSTILE[10:13] + HOSTILE[16:18],
                         ids=IDS[:8] + IDS[10:13] + IDS[16:18])
def test_cli_refuses_a_hostile_id_as_a_usage_error(name: str, make: Any,
                                                   tmp_path: Path) -> None:
    from broker.cli.admin import register

    app = typer.Typer()
    register(app)
    runner = CliRunner()
    for args in (["agents", "show", make(DEV_AGENT)], ["agents", "remove", make(DEV_AGENT)],
                 ["gateways", "suspend", make(DEV_GATEWAY)]):
        result = runner.invoke(app, [*args, "--data-dir", str(tmp_path / "none")])
        assert result.exit_code == 2, result.output
        assert "SPIFFE ID" in result.output
        assert not (tmp_path / "none").exists()  # refused before the data dir is opened


@pytest.mark.parametrize("name", [
    "evil.test\n", "evil.test\r\n", "evil.test\x00", "Evil.test", "\u0435vil.test",
    "a" * 256, "evil.test:443", "user@evil.test",
])
def test_a_hostile_trust_domain_name_is_never_created(name: str, client: TestClient,
                                                      root: str, engine: Engine) -> None:
    h = bearer(root)
    r = client.post("/v1/trust-domains", headers=h, json={"name": name, "bundle": {"keys": []}})
    assert_malformed(r)
    assert [t["name"] for t in client.get("/v1/trust-domains", headers=h).json()] == [TD]
    assert admin_reasons(engine) == []


@pytest.mark.parametrize("value", [DEV_AGENT + "\n", DEV_AGENT.upper(), DEV_AGENT + "/"])
def test_cli_audit_filters_take_canonical_ids_only(value: str, tmp_path: Path) -> None:
    from broker.cli.main import app

    for option in ("--agent", "--gateway"):
        result = CliRunner().invoke(app, ["audit", "query", option, value,
                                          "--data-dir", str(tmp_path / "none")])
        assert result.exit_code == 2, result.output
        assert "SPIFFE ID" in result.output
