"""The admin commands of ``writ`` over a fresh SQLite data dir: each command's happy path
and error path, JSON on stdout, one-line errors on stderr with exit code 1
(tests/cli/test_cli_data_dir.py: a data dir without a database)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import typer
from joserfc.jwk import ECKey
from sqlmodel import Session, col, select
from typer.testing import CliRunner, Result

from broker.admin.tokens import PREFIX, authenticate_admin_token
from broker.audit.writer import AuditRecord, verify_chain
from broker.cli.admin import register
from broker.cli.dev import DevTrustDomain
from broker.db import make_engine, upgrade
from broker.signing.envelope import encode_kek, generate_kek
from registry.charter import Charter, charter_hash

AGENT = "spiffe://example.org/agents/travel/booker"
GATEWAY = "spiffe://example.org/gateway/travel"
CHARTER = {"purpose": "books travel", "scopes": ["travel.book"], "max_ttl_s": 120}


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data dir made by `writ db upgrade`: the admin commands create none."""
    for name in list(os.environ):
        if name.startswith("WRIT_"):
            monkeypatch.delenv(name)
    path = tmp_path / "data"
    path.mkdir()
    upgrade(f"sqlite:///{path / 'writ.db'}")
    return path


@pytest.fixture
def kek(monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> None:
    monkeypatch.setenv("WRIT_KEYS_KEK", encode_kek(generate_kek()))


@pytest.fixture
def charter_file(tmp_path: Path) -> Path:
    path = tmp_path / "charter.json"
    path.write_text(json.dumps(CHARTER))
    return path


class Writ:
    def __init__(self, app: typer.Typer, data_dir: Path) -> None:
        self.app = app
        self.data_dir = data_dir
        self.runner = CliRunner()

    def __call__(self, *args: str) -> Result:
        return self.runner.invoke(self.app, [*args, "--data-dir", str(self.data_dir)])

    def ok(self, *args: str) -> Result:
        result = self(*args)
        assert result.exit_code == 0, result.stderr
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args).stdout)

    def fails(self, *args: str, message: str) -> Result:
        result = self(*args)
        assert result.exit_code == 1, (result.stdout, result.stderr)
        assert result.stdout == ""
        assert result.stderr.startswith("error: ") and result.stderr.endswith(f"{message}\n")
        assert result.stderr.count("\n") == 1
        assert result.exception is None or isinstance(result.exception, SystemExit)
        return result

    def audit(self) -> list[tuple[str, str | None, str | None, dict[str, Any]]]:
        engine = make_engine(f"sqlite:///{self.data_dir / 'writ.db'}")
        try:
            with Session(engine) as session:
                rows = session.exec(select(AuditRecord).order_by(col(AuditRecord.seq)))
                return [(r.reason, r.agent, r.gateway, r.detail) for r in rows]
        finally:
            engine.dispose()


@pytest.fixture
def writ(app: typer.Typer, data_dir: Path) -> Writ:
    return Writ(app, data_dir)


# --- admin tokens --------------------------------------------------------------------


def test_admin_token_is_printed_alone_on_stdout(writ: Writ) -> None:
    result = writ.ok("admin-tokens", "create", "--name", "registrar", "--scope", "agents:write",
                     "--scope", "agents:read", "--namespace", "spiffe://example.org/agents/**",
                     "--expires-in-s", "3600")
    assert re.fullmatch(rf"{PREFIX}[0-9a-f]{{16}}_[A-Za-z0-9_-]+\n", result.stdout)
    token = result.stdout.strip()
    assert token not in result.stderr
    token_id = token[len(PREFIX):].split("_", 1)[0]
    assert result.stderr == (f"created admin token {token_id} (registrar) with scopes "
                             "agents:read agents:write; it is shown only this once\n")

    engine = make_engine(f"sqlite:///{writ.data_dir / 'writ.db'}")
    with Session(engine) as session:
        row = authenticate_admin_token(session, token, now=0.0)
        assert row is not None
        assert row.scopes == ["agents:read", "agents:write"]
        assert row.namespaces == ["spiffe://example.org/agents/**"]
        assert row.expires_at is not None
    engine.dispose()

    [listed] = writ.json("admin-tokens", "list")
    assert listed["id"] == token_id and listed["created_by"] == "cli"
    assert set(listed) == {"id", "name", "scopes", "namespaces", "expires_at", "created_at",
                           "created_by", "revoked_at"}
    assert token not in json.dumps(listed)

    assert writ.ok("admin-tokens", "revoke", token_id).stderr == \
        f"admin token {token_id} revoked\n"
    assert writ.json("admin-tokens", "list")[0]["revoked_at"] is not None
    assert [(r[0], r[3]) for r in writ.audit()] == [
        ("admin_token.created", {"by": "cli", "token_id": token_id, "name": "registrar",
                                 "scopes": ["agents:read", "agents:write"],
                                 "namespaces": ["spiffe://example.org/agents/**"]}),
        ("admin_token.revoked", {"by": "cli", "token_id": token_id}),
    ]
    assert token not in json.dumps(writ.audit())


def test_admin_token_errors(writ: Writ) -> None:
    writ.fails("admin-tokens", "create", "--name", "x", "--scope", "agents:fly",
               message="invalid AdminTokenCreate: scopes: unknown admin scope(s): "
                       "['agents:fly']")
    writ.fails("admin-tokens", "create", "--name", "x", "--scope", "agents:read",
               "--namespace", "example.org/**", message="a pattern must start with spiffe://")
    writ.fails("admin-tokens", "revoke", "0000000000000000",
               message="no admin token 0000000000000000")
    assert writ("admin-tokens", "create", "--name", "x").exit_code == 2  # --scope required
    assert writ.audit() == []


# --- agents --------------------------------------------------------------------------


def test_agent_commands(writ: Writ, charter_file: Path, tmp_path: Path) -> None:
    enrolled = writ.json("agents", "enroll", "--spiffe-id", AGENT, "--owner", "team-travel",
                         "--charter", str(charter_file), "--description", "books trips",
                         "--expires-at", "2000000000")
    first_hash = charter_hash(Charter.model_validate(CHARTER))
    assert {k: v for k, v in enrolled.items() if k not in ("created_at", "updated_at")} == {
        "spiffe_id": AGENT, "owner": "team-travel", "description": "books trips",
        "enrollment_expires_at": 2000000000.0, "status": "active", "charter_version": 1,
        "charter_hash": first_hash, "enrolled_by": "cli",
        "charter": {**CHARTER, "tools": [], "environments": [], "delegate_to": [],
                    "approval_required": [], "acts_for": []},
    }
    assert writ.json("agents", "list") == [enrolled]
    assert writ.json("agents", "list", "--offset", "1") == []
    assert writ.json("agents", "show", AGENT) == enrolled

    wider = tmp_path / "wider.json"
    wider.write_text(json.dumps({**CHARTER, "scopes": ["travel.book", "travel.cancel"]}))
    updated = writ.json("agents", "update", AGENT, "--charter", str(wider), "--owner", "ops")
    assert updated["charter_version"] == 2
    assert updated["charter_hash"] != first_hash
    assert updated["owner"] == "ops"

    assert writ.json("agents", "suspend", AGENT)["status"] == "suspended"
    assert writ.json("agents", "resume", AGENT)["status"] == "active"
    assert writ.ok("agents", "remove", AGENT).stderr == f"agent {AGENT} removed\n"
    assert writ.json("agents", "list") == []

    assert [(r[0], r[1], r[3]["by"]) for r in writ.audit()] == [
        ("agent.created", AGENT, "cli"), ("agent.updated", AGENT, "cli"),
        ("agent.suspended", AGENT, "cli"), ("agent.resumed", AGENT, "cli"),
        ("agent.removed", AGENT, "cli"),
    ]
    assert writ.audit()[1][3]["changed"] == ["charter", "owner"]


def test_agent_errors(writ: Writ, charter_file: Path, tmp_path: Path) -> None:
    enroll = ("agents", "enroll", "--owner", "o")
    missing = tmp_path / "missing.json"
    writ.fails(*enroll, "--spiffe-id", AGENT, "--charter", str(missing),
               message=f"cannot read the charter file {missing}: No such file or directory")
    garbled = tmp_path / "garbled.json"
    garbled.write_text("{not json")
    result = writ(*enroll, "--spiffe-id", AGENT, "--charter", str(garbled))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: the charter file {garbled} is not valid JSON: ")
    listed = tmp_path / "list.json"
    listed.write_text("[]")
    writ.fails(*enroll, "--spiffe-id", AGENT, "--charter", str(listed),
               message=f"the charter file {listed} must hold a JSON object")
    too_long = tmp_path / "long.json"
    too_long.write_text(json.dumps({**CHARTER, "max_ttl_s": 7200}))
    writ.fails(*enroll, "--spiffe-id", AGENT, "--charter", str(too_long),
               message="invalid Charter: max_ttl_s: Input should be less than or equal to 3600")
    writ.fails(*enroll, "--spiffe-id", "spiffe://Example.org/x", "--charter", str(charter_file),
               message="SPIFFE ID is not in canonical (lowercase trust domain) form")

    writ.ok(*enroll, "--spiffe-id", AGENT, "--charter", str(charter_file))
    writ.fails(*enroll, "--spiffe-id", AGENT, "--charter", str(charter_file),
               message=f"agent {AGENT} is already enrolled")
    other = "spiffe://example.org/agents/other"
    writ.fails("agents", "show", other, message=f"no agent {other}")
    writ.fails("agents", "update", other, "--owner", "x", message=f"no agent {other}")
    writ.fails("agents", "update", AGENT, message="nothing to change: give --charter, --owner, "
                                                  "--description or --expires-at")
    writ.fails("agents", "suspend", other, message=f"no agent {other}")
    writ.fails("agents", "remove", other, message=f"no agent {other}")
    assert writ("agents", "list", "--limit", "501").exit_code == 2


# --- gateways ------------------------------------------------------------------------


def test_gateway_commands(writ: Writ, tmp_path: Path) -> None:
    public = {**ECKey.generate_key("P-256", private=True).as_dict(private=False), "kid": "gw-1"}
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [public]}))
    added = writ.json("gateways", "add", "--client-id", GATEWAY, "--auth-method",
                      "private_key_jwt", "--jwks", str(jwks), "--namespace",
                      "spiffe://example.org/agents/**", "--namespace",
                      "spiffe://example.org/tools/*")
    assert {k: v for k, v in added.items() if k not in ("created_at", "updated_at")} == {
        "client_id": GATEWAY, "auth_method": "private_key_jwt", "description": "",
        "agent_namespaces": ["spiffe://example.org/agents/**", "spiffe://example.org/tools/*"],
        "token_types": ["urn:ietf:params:oauth:token-type:txn_token"],
        "jwks": {"keys": [public]}, "status": "active",
    }
    assert writ.json("gateways", "list") == [added]
    assert writ.json("gateways", "show", GATEWAY) == added
    assert writ.json("gateways", "suspend", GATEWAY)["status"] == "suspended"
    assert writ.json("gateways", "resume", GATEWAY)["status"] == "active"
    assert writ.ok("gateways", "remove", GATEWAY).stderr == f"gateway {GATEWAY} removed\n"
    assert writ.json("gateways", "list") == []
    assert [(r[0], r[2]) for r in writ.audit()] == [
        ("gateway.created", GATEWAY), ("gateway.suspended", GATEWAY),
        ("gateway.resumed", GATEWAY), ("gateway.removed", GATEWAY),
    ]


def test_gateway_errors(writ: Writ, tmp_path: Path) -> None:
    ns = ("--namespace", "spiffe://example.org/agents/**")
    private = tmp_path / "private.json"
    private.write_text(json.dumps({"keys": [
        {**ECKey.generate_key("P-256", private=True).as_dict(private=True), "kid": "k"}]}))
    result = writ("gateways", "add", "--client-id", GATEWAY, "--auth-method",
                  "private_key_jwt", "--jwks", str(private), *ns)
    assert result.exit_code == 1
    assert result.stderr == "error: jwks: a published key must not carry private members\n"
    assert '"d"' not in result.stdout + result.stderr
    writ.fails("gateways", "add", "--client-id", GATEWAY, "--auth-method", "private_key_jwt",
               *ns, message="private_key_jwt needs a JWKS with at least one public key")
    writ.fails("gateways", "add", "--client-id", GATEWAY, "--namespace", "agents/**",
               message="a pattern must start with spiffe://")
    writ.fails("gateways", "add", "--client-id", GATEWAY, "--jwks", str(tmp_path / "no"), *ns,
               message=f"cannot read the JWKS file {tmp_path / 'no'}: No such file or directory")
    writ.ok("gateways", "add", "--client-id", GATEWAY, *ns)
    writ.fails("gateways", "add", "--client-id", GATEWAY, *ns,
               message=f"gateway {GATEWAY} is already registered")
    other = "spiffe://example.org/gateway/other"
    for verb in ("show", "suspend", "resume", "remove"):
        writ.fails("gateways", verb, other, message=f"no gateway {other}")


# --- trust domains -------------------------------------------------------------------


def test_trust_domain_commands(writ: Writ, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.json"
    bundle.write_text(json.dumps(DevTrustDomain.generate("example.org").bundle()))
    from_file = writ.json("trust-domains", "add", "example.org", "--bundle-file", str(bundle))
    assert {k: v for k, v in from_file.items() if k != "updated_at"} == {
        "name": "example.org", "source": "file", "location": str(bundle.resolve()),
        "key_count": 0, "endpoint_profile": None, "endpoint_spiffe_id": None, "ca_file": None,
        "status": None}
    inline = writ.json("trust-domains", "add", "inline.example", "--bundle-file", str(bundle),
                       "--inline")
    assert (inline["source"], inline["location"], inline["key_count"]) == ("inline", None, 1)
    endpoint = writ.json("trust-domains", "add", "remote.example", "--endpoint",
                         "https://remote.example/bundle")
    assert (endpoint["source"], endpoint["location"]) == ("endpoint",
                                                          "https://remote.example/bundle")
    spire = writ.json("trust-domains", "add", "spire.example", "--workload-api",
                      "unix:///run/spire/agent.sock")
    assert (spire["source"], spire["location"]) == ("workload_api",
                                                    "unix:///run/spire/agent.sock")

    names = [t["name"] for t in writ.json("trust-domains", "list")]
    assert names == ["example.org", "inline.example", "remote.example", "spire.example"]
    assert writ.json("trust-domains", "show", "inline.example") == inline
    assert writ.ok("trust-domains", "remove", "spire.example").stderr == \
        "trust domain spire.example removed\n"
    assert [r[0] for r in writ.audit()] == ["trust_domain.created"] * 4 + \
        ["trust_domain.removed"]
    assert writ.audit()[0][3] == {"by": "cli", "trust_domain": "example.org", "source": "file"}


def test_trust_domain_errors(writ: Writ, tmp_path: Path) -> None:
    one_of = "give exactly one of --bundle-file, --endpoint, --workload-api"
    writ.fails("trust-domains", "add", "example.org", message=one_of)
    writ.fails("trust-domains", "add", "example.org", "--endpoint", "https://a.example/b",
               "--workload-api", "/tmp/sock", message=one_of)
    writ.fails("trust-domains", "add", "example.org", "--inline", "--endpoint",
               "https://a.example/b", message="--inline needs --bundle-file")
    writ.fails("trust-domains", "add", "example.org", "--endpoint", "http://a.example/b",
               message="an endpoint trust domain needs an https:// location without userinfo "
                       "or fragment")
    writ.fails("trust-domains", "add", "Example.org", "--endpoint", "https://a.example/b",
               message="trust domain must be a bare lowercase name, not 'Example.org'")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"keys": [
        {**ECKey.generate_key("P-256", private=True).as_dict(private=True), "kid": "k",
         "use": "jwt-svid"}]}))
    writ.fails("trust-domains", "add", "example.org", "--bundle-file", str(bad),
               message="bundle: keys[0]: a trust bundle must not carry private key members")
    writ.ok("trust-domains", "add", "example.org", "--endpoint", "https://a.example/b")
    writ.fails("trust-domains", "add", "example.org", "--endpoint", "https://a.example/b",
               message="trust domain example.org already exists")
    writ.fails("trust-domains", "show", "none.example", message="no trust domain none.example")
    writ.fails("trust-domains", "remove", "none.example",
               message="no trust domain none.example")


# --- signing keys --------------------------------------------------------------------


@pytest.mark.usefixtures("kek")
def test_key_commands(writ: Writ) -> None:
    assert writ.json("keys", "list") == []
    refused = writ("keys", "rotate")  # a fresh database gets its first keys, then waits
    keys = writ.json("keys", "list")
    assert sorted(k["state"] for k in keys) == ["active", "next"]
    upcoming = next(k["kid"] for k in keys if k["state"] == "next")
    assert (refused.exit_code, refused.stdout, refused.stderr) == (
        1, "", f"error: the next key {upcoming} has been published for less than "
               "publish_grace_s=300s\n")
    rotated = writ.json("keys", "rotate", "--force")
    assert rotated["activated_kid"] == upcoming
    states = {k["kid"]: k["state"] for k in writ.json("keys", "list")}
    assert states == {rotated["retired_kid"]: "retired", upcoming: "active",
                      rotated["next_kid"]: "next"}
    for k in writ.json("keys", "list"):
        assert not {"d", "p", "q"} & set(k["public_jwk"])
    # the first keys, made by the refused rotation, are a key change too
    assert [(r[0], r[3].get("forced")) for r in writ.audit()] == [
        ("keys.created", None), ("keys.rotated", True)]


def test_keys_need_a_kek(writ: Writ) -> None:
    writ.fails("keys", "list", message="no key-encryption key configured: set WRIT_KEYS_KEK "
               "(base64url of 32 random bytes) or WRIT_KEYS_KEK_FILE; a KEK file is generated "
               "only in dev mode")


def test_keys_read_a_dev_kek_file(writ: Writ) -> None:
    (writ.data_dir / "kek").write_bytes(generate_kek())
    assert writ.json("keys", "list") == []


# --- settings and the audit trail ----------------------------------------------------


def test_data_dir_from_environment(app: typer.Typer, data_dir: Path, charter_file: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WRIT_DATA_DIR", str(data_dir))
    runner = CliRunner()
    result = runner.invoke(app, ["agents", "enroll", "--spiffe-id", AGENT, "--owner", "o",
                                 "--charter", str(charter_file)])
    assert result.exit_code == 0, result.stderr
    assert (data_dir / "writ.db").exists()


def test_bad_setting_is_one_line(writ: Writ, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WRIT_PORT", "99999")
    result = writ("agents", "list")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: invalid Settings: port: ")
    assert result.stderr.count("\n") == 1


def test_writes_keep_the_audit_chain_intact(writ: Writ, charter_file: Path) -> None:
    writ.ok("agents", "enroll", "--spiffe-id", AGENT, "--owner", "o", "--charter",
            str(charter_file))
    writ.ok("agents", "suspend", AGENT)
    writ.ok("admin-tokens", "create", "--name", "n", "--scope", "agents:read")
    engine = make_engine(f"sqlite:///{writ.data_dir / 'writ.db'}")
    verdict = verify_chain(engine)
    engine.dispose()
    assert verdict.ok and verdict.count == 3


def test_database_url_from_environment(app: typer.Typer, data_dir: Path, db_url: str,
                                       charter_file: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """WRIT_DATABASE_URL names the database as for `writ serve` (PostgreSQL when set)."""
    monkeypatch.setenv("WRIT_DATABASE_URL", db_url)
    upgrade(db_url)
    writ = Writ(app, data_dir)
    writ.ok("agents", "enroll", "--spiffe-id", AGENT, "--owner", "o", "--charter",
            str(charter_file))
    assert [a["spiffe_id"] for a in writ.json("agents", "list")] == [AGENT]
    engine = make_engine(db_url)
    assert verify_chain(engine).count == 1
    engine.dispose()


def test_trust_domain_endpoint_profiles(writ: Writ, tmp_path: Path) -> None:
    from tests.tls import make_pki, make_spiffe_ca

    bootstrap = tmp_path / "partner-bundle.json"
    bootstrap.write_text(json.dumps({"keys": [make_spiffe_ca("partner.example").bundle_element()]}))
    spiffe = writ.json("trust-domains", "add", "partner.example", "--endpoint",
                       "https://bundle.partner.example/b", "--profile", "https_spiffe",
                       "--endpoint-spiffe-id", "spiffe://partner.example/spire/server",
                       "--bootstrap-bundle", str(bootstrap))
    assert {k: spiffe[k] for k in ("source", "endpoint_profile", "endpoint_spiffe_id",
                                   "ca_file", "status")} == {
        "source": "endpoint", "endpoint_profile": "https_spiffe",
        "endpoint_spiffe_id": "spiffe://partner.example/spire/server", "ca_file": None,
        "status": None}
    ca = tmp_path / "web-ca.pem"
    ca.write_bytes(make_pki().ca_pem)
    web = writ.json("trust-domains", "add", "web.example", "--endpoint",
                    "https://bundle.web.example/b", "--ca-file", str(ca))
    assert (web["endpoint_profile"], web["ca_file"]) == ("https_web", str(ca.resolve()))
    assert writ.json("trust-domains", "show", "web.example") == web

    writ.fails("trust-domains", "add", "p2.example", "--endpoint", "https://b.p2.example/b",
               "--profile", "https_spiffe", "--bootstrap-bundle", str(bootstrap),
               message="https_spiffe needs the endpoint's SPIFFE ID (endpoint_spiffe_id)")
    writ.fails("trust-domains", "add", "p3.example", "--endpoint", "https://b.p3.example/b",
               "--profile", "https_spiffe", "--endpoint-spiffe-id",
               "spiffe://p3.example/spire/server",
               message="https_spiffe needs the trust domain's bundle to bootstrap from "
               "(SPIFFE Federation §5.2.2.2)")
    writ.fails("trust-domains", "add", "p4.example", "--workload-api", "unix:///s.sock",
               "--ca-file", str(ca), message="--profile, --endpoint-spiffe-id, "
               "--bootstrap-bundle and --ca-file need --endpoint")
