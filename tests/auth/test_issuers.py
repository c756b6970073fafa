"""Trusted user-token issuers: the store on SQLite and PostgreSQL, ``/v1/issuers`` (exact
bodies, scopes, refusals, audit, snapshot), ``writ issuers ...``, and the ``jwks`` client's
OpenID Connect discovery."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from broker.admin.tokens import ALL_SCOPES, AdminTokenCreate, create_admin_token
from broker.audit.writer import AuditRecord
from broker.cli.admin import register
from broker.db import upgrade
from jwks.client import JwksClient
from jwks.errors import JwksFetchError
from registry.errors import Conflict, NotFound
from registry.issuers import (
    IssuerDiscovery,
    IssuerView,
    TrustedIssuerCreate,
    create_issuer,
    delete_issuer,
    fetch_issuer,
    list_issuers,
    load_issuer_views,
)
from tests.conftest import T0, FrozenClock
from tests.idp import TestIssuer

IDP = "https://idp.example.com/realms/acme"
BODY = {"issuer": IDP, "audiences": ["writ"], "algorithms": ["RS256", "ES256"]}
PUBLIC = {"issuer": IDP, "description": "", "discovery": "oidc", "jwks_uri": None,
          "ca_file": None,
          "audiences": ["writ"], "algorithms": ["RS256", "ES256"],
          "allowed_clients": [], "agent_namespaces": [], "created_by": "",
          "created_at": T0, "updated_at": T0}


# --- store -----------------------------------------------------------------------------


def test_store_roundtrip_and_snapshot_view(engine: Engine, clock: FrozenClock) -> None:
    with Session(engine) as s:
        created = create_issuer(s, TrustedIssuerCreate.model_validate(
            {**BODY, "discovery": "rfc8414"}), now=clock(), by="test")
        s.commit()
        with pytest.raises(Conflict):
            create_issuer(s, TrustedIssuerCreate.model_validate(BODY), now=clock(), by="x")
        s.rollback()
    assert created.model_dump() == {**PUBLIC, "discovery": "rfc8414", "created_by": "test"}
    with Session(engine) as s:
        assert fetch_issuer(s, IDP) == created
        assert list_issuers(s) == [created]
        assert dict(load_issuer_views(s)) == {IDP: IssuerView(
            issuer=IDP, discovery=IssuerDiscovery.rfc8414, jwks_uri=None,
            audiences=frozenset({"writ"}), algorithms=("RS256", "ES256"))}
        delete_issuer(s, IDP)
        s.commit()
        assert fetch_issuer(s, IDP) is None
        with pytest.raises(NotFound):
            delete_issuer(s, IDP)


@pytest.mark.parametrize(("change", "message"), [
    ({"issuer": "http://idp.example.com"}, "issuer must be an https URL"),
    ({"issuer": "https://idp.example.com?x=1"}, "issuer must be an https URL"),
    ({"issuer": "https://user@idp.example.com"}, "issuer must be an https URL"),
    ({"jwks_uri": "http://idp.example.com/keys"}, "jwks_uri must be an https URL"),
    ({"algorithms": ["HS256"]}, "forbidden algorithm"),
    ({"algorithms": ["none"]}, "forbidden algorithm"),
    ({"algorithms": ["EdDSA"]}, "unsupported algorithm"),
    ({"algorithms": []}, "at least 1 item"),
    ({"audiences": []}, "at least 1 item"),
    ({"audiences": [""]}, "each audience must be"),
    ({"discovery": "webfinger"}, "'webfinger' is not a valid IssuerDiscovery"),
], ids=["http", "query", "userinfo", "http-jwks-uri", "hs256", "none", "eddsa",
        "no-algorithms", "no-audiences", "empty-audience", "bad-discovery"])
def test_create_validation(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrustedIssuerCreate.model_validate({**BODY, **change})


# --- admin API -------------------------------------------------------------------------


def admin_token(engine: Engine, clock: FrozenClock, *scopes: str,
                namespaces: tuple[str, ...] = ()) -> dict[str, str]:
    with Session(engine) as session:
        issued = create_admin_token(session, AdminTokenCreate(
            name="t", scopes=list(scopes), namespaces=list(namespaces)), now=clock(), by="test")
        session.commit()
    return {"Authorization": f"Bearer {issued.token}"}


def test_admin_api_lifecycle(client: TestClient, engine: Engine, clock: FrozenClock) -> None:
    root = admin_token(engine, clock, *sorted(ALL_SCOPES))
    r = client.post("/v1/issuers", headers=root, json=BODY)
    assert r.status_code == 201, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body == {**PUBLIC, "created_by": body["created_by"]}
    # this replica applies it at once
    assert IDP in client.app.state.broker.snapshot.issuers
    assert client.get("/v1/issuers", headers=root).json() == [body]
    assert client.get(f"/v1/issuers/{IDP}", headers=root).json() == body
    r = client.post("/v1/issuers", headers=root, json=BODY)
    assert (r.status_code, r.json()["error"]) == (409, "conflict")
    r = client.delete(f"/v1/issuers/{IDP}", headers=root)
    assert r.status_code == 204
    assert IDP not in client.app.state.broker.snapshot.issuers
    r = client.get(f"/v1/issuers/{IDP}", headers=root)
    assert r.status_code == 404
    assert r.json() == {"error": "not_found", "error_description": f"no trusted issuer {IDP}"}
    with Session(engine) as s:
        rows = list(s.exec(select(AuditRecord).where(col(AuditRecord.kind) == "admin")
                           .order_by(col(AuditRecord.seq))))
    assert [(r.reason, r.detail.get("issuer")) for r in rows] == [
        ("issuer.created", IDP), ("issuer.removed", IDP)]


def test_admin_api_refusals(client: TestClient, engine: Engine, clock: FrozenClock) -> None:
    reader = admin_token(engine, clock, "issuers:read")
    r = client.post("/v1/issuers", headers=reader, json=BODY)
    assert r.status_code == 403
    assert r.headers["www-authenticate"] == \
        'Bearer error="insufficient_scope", scope="issuers:write"'
    bound = admin_token(engine, clock, "issuers:write", "issuers:read",
                        namespaces=("spiffe://dev.writ.local/agents/**",))
    r = client.post("/v1/issuers", headers=bound, json=BODY)
    assert r.status_code == 403
    assert r.json() == {"error": "forbidden", "error_description":
                        "a namespace-bound admin token cannot change trusted issuers"}
    writer = admin_token(engine, clock, "issuers:write")
    r = client.post("/v1/issuers", headers=writer, json={**BODY, "algorithms": ["HS256"]})
    assert r.status_code == 422
    assert r.json()["error"] == "invalid_request"
    assert "forbidden algorithm" in r.json()["error_description"]
    assert client.get("/v1/issuers").status_code == 401


# --- CLI -------------------------------------------------------------------------------


def test_cli_issuers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("WRIT_"):
            monkeypatch.delenv(name)
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    (tmp_path / "data").mkdir()
    upgrade(f"sqlite:///{tmp_path / 'data' / 'writ.db'}")

    def writ(*args: str) -> Any:
        return runner.invoke(app, [*args, "--data-dir", str(tmp_path / "data")])

    result = writ("issuers", "add", IDP, "--audience", "writ", "--audience", "api",
                  "--algorithm", "ES256", "--discovery", "rfc8414")
    assert result.exit_code == 0, result.stderr
    shown = json.loads(result.stdout)
    assert {k: shown[k] for k in ("issuer", "audiences", "algorithms", "discovery",
                                  "created_by")} == {
        "issuer": IDP, "audiences": ["writ", "api"], "algorithms": ["ES256"],
        "discovery": "rfc8414", "created_by": "cli"}
    assert json.loads(writ("issuers", "list").stdout) == [shown]
    assert json.loads(writ("issuers", "show", IDP).stdout) == shown
    result = writ("issuers", "add", IDP, "--audience", "writ")
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == f"error: issuer {IDP} is already trusted\n"
    result = writ("issuers", "add", "https://x.example", "--audience", "w", "--algorithm",
                  "HS256")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: invalid TrustedIssuerCreate: algorithms:")
    # docs/delegation.md "Binding user tokens": both lists replaced in place
    result = writ("issuers", "update", IDP, "--allowed-client", "webapp",
                  "--allowed-client", "mobile", "--agent-namespace", "spiffe://td/agents/**")
    assert result.exit_code == 0, result.stderr
    updated = json.loads(result.stdout)
    assert (updated["allowed_clients"], updated["agent_namespaces"]) == (
        ["webapp", "mobile"], ["spiffe://td/agents/**"])
    result = writ("issuers", "update", IDP, "--agent-namespace", "not a pattern")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: invalid TrustedIssuerUpdate: agent_namespaces:")
    result = writ("issuers", "update", IDP, "--allowed-client", "two words")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: invalid TrustedIssuerUpdate: allowed_clients:")
    assert json.loads(writ("issuers", "show", IDP).stdout)["allowed_clients"] == [
        "webapp", "mobile"]
    result = writ("issuers", "remove", IDP)
    assert result.exit_code == 0
    assert result.stderr == f"issuer {IDP} removed\n"
    result = writ("issuers", "show", IDP)
    assert result.stderr == f"error: no trusted issuer {IDP}\n"


# --- jwks client: OpenID Connect discovery ---------------------------------------------


def test_jwks_client_openid_discovery() -> None:
    idp = TestIssuer("https://idp.test/realms/acme")
    with httpx.Client(transport=idp.transport()) as http:
        client = JwksClient(issuer=idp.issuer, http=http, discovery="openid-configuration")
        assert client.get_key(idp.kid) is not None
        assert client.jwks_uri == "https://idp.test/realms/acme/keys"
    # OIDC Discovery §4.1: appended to the issuer, path included
    assert idp.hits["/realms/acme/.well-known/openid-configuration"] == 1


def test_jwks_client_rfc8414_discovery_inserts_well_known() -> None:
    idp = TestIssuer("https://idp.test/realms/acme")
    with httpx.Client(transport=idp.transport()) as http:
        JwksClient(issuer=idp.issuer, http=http).get_key(idp.kid)
    assert idp.hits["/.well-known/oauth-authorization-server/realms/acme"] == 1


def test_jwks_client_discovery_refuses_other_issuer() -> None:
    # OIDC Discovery §4.3: the issuer in the document must be the one asked about
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"issuer": "https://evil.test",
                                         "jwks_uri": "https://evil.test/keys"})

    with httpx.Client(transport=httpx.MockTransport(handle)) as http:
        client = JwksClient(issuer="https://idp.test", http=http,
                            discovery="openid-configuration")
        with pytest.raises(JwksFetchError, match="names a different issuer"):
            client.get_key("kid")


def test_jwks_client_discovery_value_checked() -> None:
    with pytest.raises(ValueError, match="discovery must be one of"):
        JwksClient(issuer="https://idp.test", discovery="webfinger")
