"""The registrar's side of tools and bounds: ``/v1/tools``, ``/v1/bounds``,
``/v1/decisions/explain`` and ``writ tools|bounds|explain``. Exact bodies, the scopes each
route needs, namespace-bound admin tokens, audit records, and the effect of every write on
``POST /token`` at once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import typer
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from broker.admin.tokens import ALL_SCOPES
from broker.audit.writer import AuditRecord
from broker.cli.admin import register as register_admin
from broker.cli.dev import (
    DEV_AGENT,
    DEV_AGENT_NAMESPACE,
    DEV_GATEWAY,
    DEV_TOOL,
    DEV_TOOL_DOCUMENT,
    DevTrustDomain,
)
from broker.cli.tools import register as register_tools
from tests.admin.test_admin_api import Issue, bearer, issue, root  # noqa: F401  (fixtures)
from tests.cli.test_cli_admin import Writ, data_dir  # noqa: F401  (fixture)
from tests.conftest import FrozenClock
from tests.grants.test_token_endpoint import post_token, token_params

TOOL = "https://tools.example/mail.json"
DOC = {
    "tool_id": TOOL, "name": "mail", "endpoint": "https://mail.example/api",
    "audience": "https://mail.example", "actions": {"send": {"risk": "medium"}},
    "scopes": ["demo.write"], "tags": ["demo"],
}
DEV_BOUND_PATH = f"/v1/bounds/{quote(DEV_AGENT_NAMESPACE, safe='')}"


def tool_path(tool_id: str = TOOL, suffix: str = "") -> str:
    return f"/v1/tools/{quote(tool_id, safe='')}{suffix}"


def admin_audit(engine: Engine) -> list[tuple[str, str | None, dict[str, Any]]]:
    with Session(engine) as session:
        rows = session.exec(select(AuditRecord).where(col(AuditRecord.kind) == "admin")
                            .order_by(col(AuditRecord.seq)))
        return [(r.reason, r.tool, r.detail) for r in rows]


def ask_for_dev_tool(client: TestClient, td: DevTrustDomain, now: float) -> Any:
    details = json.dumps({"tool": DEV_TOOL, "action": "echo"})
    return post_token(client, token_params(td, now, request_details=details))


@pytest.mark.parametrize(("method", "path", "scope"), [
    ("GET", "/v1/tools", "tools:read"),
    ("GET", tool_path(DEV_TOOL), "tools:read"),
    ("POST", "/v1/tools", "tools:write"),
    ("PUT", tool_path(DEV_TOOL), "tools:write"),
    ("POST", tool_path(DEV_TOOL, "/refresh"), "tools:write"),
    ("DELETE", tool_path(DEV_TOOL), "tools:write"),
    ("GET", "/v1/bounds", "bounds:read"),
    ("GET", DEV_BOUND_PATH, "bounds:read"),
    ("PUT", "/v1/bounds", "bounds:write"),
    ("DELETE", DEV_BOUND_PATH, "bounds:write"),
    ("POST", "/v1/decisions/explain", "decisions:explain"),
])
def test_each_route_names_its_scope(client: TestClient, issue: Issue, method: str,  # noqa: F811
                                    path: str, scope: str) -> None:
    r = client.request(method, path, headers=bearer(issue(*sorted(ALL_SCOPES - {scope}))))
    assert r.status_code == 403
    assert r.headers["www-authenticate"] == f'Bearer error="insufficient_scope", scope="{scope}"'


def test_pinned_tool_lifecycle(client: TestClient, root: str, engine: Engine,  # noqa: F811
                               seeded: DevTrustDomain, clock: FrozenClock) -> None:
    h = bearer(root)
    r = client.post("/v1/tools", json={"document": DOC}, headers=h)
    assert r.status_code == 201, r.text
    assert r.headers["cache-control"] == "no-store"
    created = r.json()
    assert created == {
        "tool_id": TOOL, "source": "pinned",
        "document": {**DOC, "description": "", "token": {"kind": "txn_token",
                     "token_endpoint": None, "grant": None, "scope": None},
                     "requires_chain": [], "max_ttl_s": 300, "authorization_details_types": [],
                     "actions": {"send": {"risk": "medium", "approval_required": False,
                                          "description": ""}}},
        "document_hash": created["document_hash"], "fetched_at": None, "fresh_until": None,
        "usable_until": None, "created_by": created["created_by"], "created_at": clock(),
        "updated_at": clock(), "pending_document": None, "pending_hash": None,
        "pending_changes": None, "pending_since": None,
    }
    # the snapshot has it at once (this replica refreshed before answering)
    assert client.app.state.broker.snapshot.tools[TOOL].endpoint == "https://mail.example/api"
    assert client.post("/v1/tools", json={"document": DOC}, headers=h).status_code == 409
    listed = client.get("/v1/tools", headers=h).json()
    assert [t["tool_id"] for t in listed] == sorted([TOOL, DEV_TOOL])
    assert client.get("/v1/tools?limit=1&offset=1", headers=h).json() == [
        t for t in listed if t["tool_id"] == TOOL]
    assert client.get(tool_path(), headers=h).json() == created
    # an unencoded id works too, as agent ids do
    assert client.get(f"/v1/tools/{TOOL}", headers=h).json() == created

    changed = {**DOC, "endpoint": "https://mail.example/v2"}
    r = client.put(tool_path(), json={"document": changed}, headers=h)
    assert r.status_code == 200
    assert r.json()["document_hash"] != created["document_hash"]
    assert client.app.state.broker.snapshot.tools[TOOL].endpoint == "https://mail.example/v2"
    r = client.put(tool_path(), json={"document": {**changed, "tool_id": DEV_TOOL}}, headers=h)
    assert (r.status_code, r.json()["error_description"]) == (
        422, "the document's tool_id is not the tool being replaced")
    r = client.post(tool_path(suffix="/refresh"), headers=h)
    assert (r.status_code, r.json()["error"]) == (409, "conflict")
    assert client.delete(tool_path(), headers=h).status_code == 204
    assert client.delete(tool_path(), headers=h).status_code == 404
    assert TOOL not in client.app.state.broker.snapshot.tools
    assert [(reason, tool) for reason, tool, _ in admin_audit(engine)] == [
        ("tool.registered", TOOL), ("tool.pinned", TOOL), ("tool.removed", TOOL)]


@pytest.mark.parametrize(("body", "description"), [
    ({}, "give exactly one of url and document"),
    ({"url": TOOL, "document": DOC}, "give exactly one of url and document"),
    ({"document": {**DOC, "client_secret": "s3cr3t-value"}},
     "tool metadata refused (document_has_secret): a tool metadata document must not carry "
     "secrets (member $.client_secret)"),
    ({"document": {**DOC, "tool_id": "http://tools.example/mail.json"}},
     "tool metadata refused (document_invalid): tool_id: a tool URL must use the https "
     "scheme"),
    ({"url": "https://user@tools.example/mail.json"},
     "tool metadata could not be fetched (url_userinfo): a tool URL must not carry a "
     "username or password"),
    ({"url": "https://127.0.0.1/mail.json"},
     "tool metadata could not be fetched (address_blocked): 127.0.0.1 resolves to a "
     "special-use address (loopback: 127.0.0.1)"),
], ids=["neither", "both", "secret", "http-tool-id", "userinfo-url", "loopback-url"])
def test_registration_refusals(client: TestClient, root: str, body: dict[str, Any],  # noqa: F811
                               description: str) -> None:
    r = client.post("/v1/tools", json=body, headers=bearer(root))
    assert r.status_code == 422
    assert description in r.json()["error_description"]
    assert "s3cr3t" not in r.text


def test_namespace_bound_tokens(client: TestClient, issue: Issue) -> None:  # noqa: F811
    registrar = bearer(issue(*sorted(ALL_SCOPES), namespaces=(
        "spiffe://dev.writ.local/agents/team-a/**",)))
    r = client.post("/v1/tools", json={"document": DOC}, headers=registrar)
    assert (r.status_code, r.json()) == (403, {
        "error": "forbidden",
        "error_description": "a namespace-bound admin token cannot change the tool registry"})
    assert client.get("/v1/tools", headers=registrar).status_code == 200
    inside = {"pattern": "spiffe://dev.writ.local/agents/team-a/bots/**", "tags": ["demo"]}
    assert client.put("/v1/bounds", json=inside, headers=registrar).status_code == 201
    outside = {"pattern": "spiffe://dev.writ.local/agents/**", "tags": ["*"]}
    r = client.put("/v1/bounds", json=outside, headers=registrar)
    assert (r.status_code, r.json()["error"]) == (403, "forbidden")
    assert client.delete(DEV_BOUND_PATH, headers=registrar).status_code == 403
    # nor may it explain decisions about agents outside its namespaces
    r = client.post("/v1/decisions/explain", headers=registrar,
                    json={"gateway": DEV_GATEWAY, "agent": DEV_AGENT})
    assert (r.status_code, r.json()["error"]) == (403, "forbidden")


def test_bounds_lifecycle_and_effect(client: TestClient, root: str, engine: Engine,  # noqa: F811
                                     seeded: DevTrustDomain, clock: FrozenClock) -> None:
    h = bearer(root)
    assert ask_for_dev_tool(client, seeded, clock()).status_code == 200
    dev = client.get(DEV_BOUND_PATH, headers=h).json()
    assert {k: dev[k] for k in ("pattern", "tags", "scopes", "max_risk")} == {
        "pattern": DEV_AGENT_NAMESPACE, "tags": ["demo"], "scopes": ["*"], "max_risk": "medium"}

    narrower = {"pattern": "spiffe://dev.writ.local/agents/demo/**", "tags": ["other"],
                "scopes": ["demo.read"], "max_risk": "low"}
    r = client.put("/v1/bounds", json=narrower, headers=h)
    assert r.status_code == 201
    assert r.json()["created_at"] == clock()
    r = ask_for_dev_tool(client, seeded, clock())  # every covering bound applies
    assert (r.status_code, r.json()["error"]) == (400, "access_denied")
    r = client.put("/v1/bounds", json={**narrower, "tags": ["demo"]}, headers=h)
    assert r.status_code == 200
    assert ask_for_dev_tool(client, seeded, clock()).status_code == 200
    assert [b["pattern"] for b in client.get("/v1/bounds", headers=h).json()] == [
        DEV_AGENT_NAMESPACE, narrower["pattern"]]

    for pattern in (narrower["pattern"], DEV_AGENT_NAMESPACE):
        assert client.delete(f"/v1/bounds/{quote(pattern, safe='')}",
                             headers=h).status_code == 204
    r = post_token(client, token_params(seeded, clock()))
    assert (r.status_code, r.json()) == (400, {
        "error": "access_denied", "error_description": "no namespace bound covers the agent"})
    assert client.get(DEV_BOUND_PATH, headers=h).status_code == 404
    r = client.put("/v1/bounds", json={"pattern": "spiffe://dev.writ.local/a**"}, headers=h)
    assert r.status_code == 422
    assert [reason for reason, _, _ in admin_audit(engine)] == [
        "bound.created", "bound.updated", "bound.removed", "bound.removed"]


def test_explain_answers(client: TestClient, root: str, seeded: DevTrustDomain,  # noqa: F811
                         clock: FrozenClock) -> None:
    h = bearer(root)
    details = {"tool": DEV_TOOL, "action": "echo", "intent": "say hi"}
    r = client.post("/v1/decisions/explain", headers=h, json={
        "gateway": DEV_GATEWAY, "agent": DEV_AGENT, "scope": "demo.read",
        "audience": "dev.writ.local", "request_details": details})
    assert r.status_code == 200, r.text
    assert r.json() == {
        "decision": "issue", "error": None, "reason": None, "error_description": None,
        "agent": DEV_AGENT,
        "gates": [
            {"gate": "exchange", "result": "allowed", "error": None, "reason": None,
             "detail": f"gateway {DEV_GATEWAY} named directly; not authenticated"},
            {"gate": "request", "result": "allowed", "error": None, "reason": None,
             "detail": f"audience dev.writ.local; scope asked: demo.read; tool {DEV_TOOL}, "
                       "action echo"},
            {"gate": "subject", "result": "allowed", "error": None, "reason": None,
             "detail": f"agent {DEV_AGENT} named directly; no JWT-SVID checked"},
            {"gate": "gateway", "result": "allowed", "error": None, "reason": None,
             "detail": f"gateway {DEV_GATEWAY} may speak for {DEV_AGENT}"},
            {"gate": "enrollment", "result": "allowed", "error": None, "reason": None,
             "detail": "enrolled and active; charter version 1"},
            {"gate": "bounds", "result": "allowed", "error": None, "reason": None,
             "detail": f"within {DEV_AGENT_NAMESPACE}"},
            {"gate": "charter", "result": "allowed", "error": None, "reason": None,
             "detail": f"the charter allows {DEV_TOOL} for action echo"},
            {"gate": "tool", "result": "allowed", "error": None, "reason": None,
             "detail": "echo declares echo (low)"},
            {"gate": "approval", "result": "allowed", "error": None, "reason": None,
             "detail": "no approval needed"},
            {"gate": "grant", "result": "allowed", "error": None, "reason": None,
             "detail": "scope demo.read; expires in 300 s"},
        ],
        "grant": {"subject": DEV_AGENT, "audience": "dev.writ.local", "scope": "demo.read",
                  "expires_in": 300, "tool_endpoint": DEV_TOOL_DOCUMENT.endpoint,
                  "tctx": {"purpose": "demo assistant", "tool": DEV_TOOL, "action": "echo"}},
    }
    # the same through /token
    r = post_token(client, token_params(seeded, clock(), request_details=json.dumps(details)))
    assert (r.status_code, r.json()["tool_endpoint"]) == (200, DEV_TOOL_DOCUMENT.endpoint)


#: draft-ietf-oauth-transaction-tokens-10 §Txn-Token Request: REQUIRED
ASKED = {"audience": "dev.writ.local", "scope": "demo.read"}


@pytest.mark.parametrize(("body", "gate", "error", "reason"), [
    ({"agent": DEV_AGENT}, "exchange", "invalid_request", "gateway_missing"),
    ({"gateway": DEV_GATEWAY}, "exchange", "invalid_request", "subject_token_missing"),
    ({"gateway": "spiffe://dev.writ.local/gateway/ghost", "agent": DEV_AGENT, **ASKED},
     "gateway", "invalid_client", "unknown_gateway"),
    ({"gateway": DEV_GATEWAY, "agent": "spiffe://dev.writ.local/other/x", **ASKED}, "gateway",
     "unauthorized_client", "gateway_namespace"),
    ({"gateway": DEV_GATEWAY, "agent": "spiffe://dev.writ.local/agents/ghost", **ASKED},
     "enrollment", "access_denied", "agent_not_enrolled"),
    ({"gateway": DEV_GATEWAY, "agent": DEV_AGENT,
      "requested_token_type": "urn:ietf:params:oauth:token-type:access_token"}, "exchange",
     "invalid_request", "unsupported_requested_token_type"),
    ({"client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
      "client_assertion": "x.y.z", "agent": DEV_AGENT}, "exchange", "invalid_request",
     "unsupported_assertion_type"),
    ({"client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe",
      "client_assertion": "x.y.z", "agent": DEV_AGENT}, "exchange", "invalid_client",
     "client_assertion_malformed"),
    ({"gateway": DEV_GATEWAY, "subject_token": "x.y.z", **ASKED}, "subject", "invalid_request",
     "subject_token_malformed"),
    ({"gateway": DEV_GATEWAY, "agent": DEV_AGENT, "request_details": "{nope", **ASKED},
     "request", "invalid_request", "request_details_malformed"),
    ({"gateway": DEV_GATEWAY, "agent": DEV_AGENT, "audience": "dev.writ.local"}, "request",
     "invalid_request", "scope_missing"),
    ({"gateway": DEV_GATEWAY, "agent": DEV_AGENT, "scope": "demo.read"}, "request",
     "invalid_request", "audience_missing"),
], ids=["no-gateway", "no-agent", "unknown-gateway", "outside-gateway", "not-enrolled",
        "access-token-asked", "private-key-jwt", "bad-assertion", "bad-subject-token",
        "bad-details", "no-scope", "no-audience"])
def test_explain_refusals(client: TestClient, root: str, body: dict[str, Any],  # noqa: F811
                          gate: str, error: str, reason: str) -> None:
    r = client.post("/v1/decisions/explain", json=body, headers=bearer(root))
    assert r.status_code == 200, r.text
    answer = r.json()
    assert (answer["decision"], answer["error"], answer["reason"]) == ("refuse", error, reason)
    refused = [g["gate"] for g in answer["gates"] if g["result"] == "refused"]
    assert refused == [gate]


def test_explain_subject_token_must_match_named_agent(client: TestClient, root: str,  # noqa: F811
                                                      seeded: DevTrustDomain,
                                                      clock: FrozenClock) -> None:
    from tests.conftest import ISSUER

    other = seeded.mint_svid("spiffe://dev.writ.local/agents/demo/other", ISSUER, now=clock())
    r = client.post("/v1/decisions/explain", headers=bearer(root), json={
        "gateway": DEV_GATEWAY, "agent": DEV_AGENT, "subject_token": other, **ASKED})
    assert r.json()["reason"] == "subject_token_other_agent"
    r = client.post("/v1/decisions/explain", headers=bearer(root),
                    json={"gateway": "not-a-spiffe-id", "agent": DEV_AGENT})
    assert r.status_code == 422


# --- the CLI ---------------------------------------------------------------------------------


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    register_admin(app)
    register_tools(app)
    return app


@pytest.fixture
def writ(app: typer.Typer, data_dir: Path) -> Writ:  # noqa: F811
    return Writ(app, data_dir)


def test_tool_commands(writ: Writ, tmp_path: Path) -> None:
    doc_file = tmp_path / "mail.json"
    doc_file.write_text(json.dumps(DOC))
    added = writ.json("tools", "add", "--file", str(doc_file))
    assert (added["tool_id"], added["source"], added["created_by"]) == (TOOL, "pinned", "cli")
    assert writ.json("tools", "list") == [added]
    assert writ.json("tools", "show", TOOL) == added
    writ.fails("tools", "add", "--file", str(doc_file),
               message=f"tool {TOOL} is already registered; give --replace to pin a new "
                       "document")
    doc_file.write_text(json.dumps({**DOC, "name": "mail2"}))
    replaced = writ.json("tools", "add", "--file", str(doc_file), "--replace")
    assert replaced["document"]["name"] == "mail2"
    writ.fails("tools", "refresh", TOOL, message=f"tool {TOOL} is pinned; replace its "
               "document instead")
    doc_file.write_text(json.dumps({**DOC, "password": "s3cr3t-value"}))
    result = writ.fails("tools", "add", "--file", str(doc_file),
                        message="tool metadata refused (document_has_secret): a tool metadata "
                                "document must not carry secrets (member $.password)")
    assert "s3cr3t" not in result.stderr
    writ.fails("tools", "register", "http://tools.example/x.json",
               message="tool metadata could not be fetched (url_not_https): a tool URL must "
                       "use the https scheme")
    writ.fails("tools", "register", "https://127.0.0.1/x.json",
               message="tool metadata could not be fetched (address_blocked): 127.0.0.1 "
                       "resolves to a special-use address (loopback: 127.0.0.1)")
    writ.ok("tools", "remove", TOOL)
    writ.fails("tools", "show", TOOL, message=f"no tool {TOOL}")
    writ.fails("tools", "remove", TOOL, message=f"no tool {TOOL}")
    assert [(reason, detail.get("tool_id")) for reason, _, _, detail in writ.audit()] == [
        ("tool.registered", TOOL), ("tool.pinned", TOOL), ("tool.removed", TOOL)]


def test_bound_and_explain_commands(writ: Writ, tmp_path: Path) -> None:
    pattern = "spiffe://example.org/agents/**"
    created = writ.json("bounds", "set", pattern, "--tag", "demo", "--scope", "mail.send",
                        "--max-risk", "medium")
    assert {k: created[k] for k in ("pattern", "tags", "scopes", "max_risk")} == {
        "pattern": pattern, "tags": ["demo"], "scopes": ["mail.send"], "max_risk": "medium"}
    assert writ.json("bounds", "list") == [created]
    assert writ.json("bounds", "show", pattern) == created
    writ.fails("bounds", "set", "spiffe://example.org/a**", "--tag", "x",
               message="'*' must be a whole segment and '**' only the last one")

    # a world to explain: gateway, agent, tool
    doc_file = tmp_path / "mail.json"
    doc_file.write_text(json.dumps({**DOC, "scopes": ["mail.send"]}))
    writ.ok("tools", "add", "--file", str(doc_file))
    charter = tmp_path / "charter.json"
    charter.write_text(json.dumps({"purpose": "mails", "scopes": ["mail.send"],
                                   "tools": [{"tool": TOOL}]}))
    agent, gateway = "spiffe://example.org/agents/mailer", "spiffe://example.org/gw"
    writ.ok("agents", "enroll", "--spiffe-id", agent, "--owner", "ops", "--charter", str(charter))
    writ.ok("gateways", "add", "--client-id", gateway, "--namespace", pattern)
    details = json.dumps({"tool": TOOL, "action": "send"})
    out = writ.ok("explain", "--gateway", gateway, "--agent", agent, "--details", details,
                  "--audience", "dev.writ.local", "--scope", "mail.send").stdout
    assert out.splitlines()[-1] == ("=> would issue: scope mail.send, expires in 300 s, tool "
                                    "endpoint https://mail.example/api")
    assert " 5. bounds      allowed     within spiffe://example.org/agents/**" in out
    details_file = tmp_path / "details.json"
    details_file.write_text(json.dumps({"tool": TOOL, "action": "delete"}))
    answer = json.loads(writ.ok("explain", "--gateway", gateway, "--agent", agent,
                                "--details", f"@{details_file}", "--audience",
                                "dev.writ.local", "--scope", "mail.send", "--json").stdout)
    assert (answer["decision"], answer["reason"]) == ("refuse", "action_not_declared")
    assert [g["result"] for g in answer["gates"]].count("not_reached") == 2
    writ.ok("bounds", "remove", pattern)
    out = writ.ok("explain", "--gateway", gateway, "--agent", agent, "--details", details,
                  "--audience", "dev.writ.local", "--scope", "mail.send").stdout
    assert out.splitlines()[-1] == "=> would refuse: access_denied (namespace_unbounded)"
    assert " 5. bounds      refused     access_denied (namespace_unbounded): no namespace " \
        "bound covers the agent" in out
    assert "not_reached" in out
    writ.fails("explain", "--gateway", gateway, "--agent", agent, "--details", "{x",
               message="--details is not valid JSON: Expecting property name enclosed in "
                       "double quotes: line 1 column 2 (char 1)")
    assert [reason for reason, _, _, _ in writ.audit()][-1] == "bound.removed"
