"""Binding user tokens to where they belong (docs/delegation.md "Binding user tokens"): the
client a user token was issued to, the agent namespaces its issuer serves, and the charter's
``acts_for``. Every refusal of tests/vectors/user_binding_refusals.json answers the exact
error, mints nothing, audits its reason, and leaves the process serving; the admin API and
the explain trace show the same gates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session

from broker.admin.tokens import ALL_SCOPES, AdminTokenCreate, create_admin_token
from broker.cli.admin import register as register_admin
from broker.cli.dev import DEV_GATEWAY
from broker.cli.issuers import issuers_app
from broker.cli.tools import register as register_tools
from broker.decision.user_binding import acts_for_refusal, claim_matches, subject_matches
from registry import store
from registry.charter import ActsFor, Charter
from registry.issuers import TrustedIssuerUpdate, update_issuer
from registry.models import AgentUpdate
from tests.cli.test_cli_admin import Writ, data_dir  # noqa: F401  (fixture)
from tests.conftest import FrozenClock
from tests.world import (
    ALICE,
    CHARTERS,
    IDP,
    MAILER,
    PLANNER,
    SEARCH,
    USER_CLIENT,
    World,
    decode,
    token_rows,
)

VECTORS = json.loads(
    (Path(__file__).parents[1] / "vectors" / "user_binding_refusals.json").read_text())


def _configure(engine: Engine, clock: FrozenClock, vector: dict[str, Any]) -> None:
    with Session(engine) as s:
        if "issuer" in vector:
            update_issuer(s, IDP, TrustedIssuerUpdate.model_validate(vector["issuer"]),
                          now=clock())
        if "acts_for" in vector:
            charter = Charter.model_validate({**CHARTERS[PLANNER],
                                              "acts_for": vector["acts_for"]})
            store.update_agent(s, PLANNER, AgentUpdate(charter=charter), now=clock(), by="t")
        s.commit()


def _mint(world: World, spec: dict[str, Any], now: float) -> str:
    return world.idp.mint(spec.get("sub", "alice"), now=now,
                          drop=tuple(spec.get("drop", ())), **spec.get("claims", {}))


@pytest.mark.parametrize("vector", VECTORS, ids=[v["id"] for v in VECTORS])
def test_refusals(vector: dict[str, Any], world: World, clock: FrozenClock,
                  engine: Engine) -> None:
    _configure(engine, clock, vector)
    world.refresh()
    now = clock()
    r = world.post(world.req.on_behalf_of(_mint(world, vector["user"], now), PLANNER, now))
    assert r.status_code == vector["status"], r.text
    assert r.headers["cache-control"] == "no-store"
    assert r.json() == {"error": vector["error"], "error_description": vector["description"]}
    rows = token_rows(engine)
    # nothing minted, the reason audited
    assert [(row.decision, row.reason) for row in rows] == [("denied", vector["reason"])]
    assert rows[0].jti is None and rows[0].txn is None
    # the process still serves: a user the same configuration admits gets a token
    ok = vector["ok_user"]
    if ok is None:
        assert world.client.get("/healthz").status_code == 200
        return
    r = world.post(world.req.on_behalf_of(_mint(world, ok, now), ok.get("agent", PLANNER),
                                          now))
    assert r.status_code == 200, r.text
    assert token_rows(engine)[-1].decision == "issued"


@pytest.mark.parametrize("claims", [
    {},  # client_id only (tests/idp.py)
    {"azp": USER_CLIENT},  # both, agreeing
], ids=["client-id", "azp-and-client-id"])
def test_allowed_client_is_accepted(claims: dict[str, Any], world: World,
                                    clock: FrozenClock) -> None:
    r = world.post(world.req.on_behalf_of(world.idp.mint(now=clock(), **claims), PLANNER,
                                          clock()))
    assert r.status_code == 200, r.text


def test_token_naming_no_client_is_bound_by_audience(world: World, clock: FrozenClock,
                                                     engine: Engine) -> None:
    now = clock()
    r = world.post(world.req.on_behalf_of(world.idp.mint(now=now, drop=("client_id",)),
                                          PLANNER, now))
    assert r.status_code == 200, r.text
    # the audience is still checked first
    r = world.post(world.req.on_behalf_of(
        world.idp.mint(now=now, drop=("client_id",), audience="another-api"), PLANNER, now))
    assert r.json()["error"] == "invalid_request"
    assert token_rows(engine)[-1].reason == "subject_token_wrong_aud"


def test_tenant_claim_issued_token_and_audit(world: World, clock: FrozenClock,
                                            engine: Engine) -> None:
    _configure(engine, clock, {"acts_for": [
        {"issuer": IDP, "subjects": ["*@acme.example"], "claims": {"tenant": "acme"}}]})
    world.refresh()
    now = clock()
    user = world.idp.mint("dana@acme.example", now=now, tenant="acme")
    r = world.post(world.req.on_behalf_of(user, PLANNER, now))
    assert r.status_code == 200, r.text
    assert decode(r.json()["access_token"])[1]["sub"] == f"{world.idp.issuer}#dana@acme.example"
    assert token_rows(engine)[-1].decision == "issued"


def test_issuer_change_applies_to_a_cached_user_token(world: World, clock: FrozenClock,
                                                      engine: Engine) -> None:
    now = clock()
    user = world.idp.mint(now=now)
    assert world.post(world.req.on_behalf_of(user, PLANNER, now)).status_code == 200
    _configure(engine, clock, {"issuer": {"allowed_clients": ["mobile"]}})
    world.refresh()
    r = world.post(world.req.on_behalf_of(user, PLANNER, now))
    assert r.status_code == 400
    assert token_rows(engine)[-1].reason == "subject_token_client_not_allowed"


# --- pure rules ---------------------------------------------------------------------------


@pytest.mark.parametrize(("subject", "patterns", "expected"), [
    ("alice", ("alice",), True),
    ("alice", ("Alice",), False),
    ("alice", ("ali",), False),
    ("alice@acme", ("*@acme",), True),
    ("alice@acme.evil", ("*@acme",), False),
    ("a.b", ("a?b", "a[.]b"), False),
    ("anything\nat all", ("*",), True),
    ("x", (), False),
], ids=["exact", "case", "prefix", "suffix-glob", "suffix-trick", "no-other-wildcards",
        "star-any", "no-patterns"])
def test_subject_matches(subject: str, patterns: tuple[str, ...], expected: bool) -> None:
    assert subject_matches(subject, patterns) is expected


@pytest.mark.parametrize(("value", "wanted", "expected"), [
    ("acme", "acme", True), (["x", "acme"], "acme", True), ("acme ", "acme", False),
    (1, True, False), (True, 1, False), (7, "7", False), ({"acme": 1}, "acme", False),
    ([["acme"]], "acme", False), (None, "acme", False),
], ids=["equal", "in-array", "space", "int-not-bool", "bool-not-int", "int-not-str",
        "object", "nested-array", "null"])
def test_claim_matches(value: Any, wanted: Any, expected: bool) -> None:
    assert claim_matches(value, wanted) is expected


def test_acts_for_reasons_pick_the_most_specific() -> None:
    rules = (ActsFor(issuer=IDP, subjects=("alice",)),
             ActsFor(issuer=IDP, subjects=("bob",), claims={"tenant": "acme"}))
    assert acts_for_refusal(rules, "https://x.test", "alice", {}) == "acts_for_issuer"
    assert acts_for_refusal(rules, IDP, "carol", {}) == "acts_for_subject"
    assert acts_for_refusal(rules, IDP, "bob", {"tenant": "x"}) == "acts_for_claim"
    assert acts_for_refusal(rules, IDP, "bob", {"tenant": "acme"}) is None
    assert acts_for_refusal(rules, IDP, "alice", {}) is None


@pytest.mark.parametrize(("acts_for", "message"), [
    ({"issuer": IDP, "claims": {"sub": "x"}}, "cannot be required here"),
    ({"issuer": IDP, "claims": {"tenant": 1.5}}, "valid"),
    ({"issuer": IDP, "subjects": []}, "at least 1 item"),
    ({"issuer": IDP, "subjects": ["a\nb"]}, "printable"),
    ({"issuer": IDP, "unknown": 1}, "Extra inputs"),
], ids=["reserved-claim", "float-value", "no-subjects", "control-char", "extra-member"])
def test_acts_for_validation(acts_for: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Charter.model_validate({"acts_for": [acts_for]})


def test_charter_hash_unchanged_without_acts_for() -> None:
    from registry.charter import charter_hash

    plain = Charter.model_validate({"scopes": ["a"]})
    bound = Charter.model_validate({"scopes": ["a"], "acts_for": [{"issuer": IDP}]})
    assert charter_hash(plain) != charter_hash(bound)
    assert "acts_for" not in json.dumps(plain.model_dump(mode="json", exclude_defaults=True))


# --- admin API ------------------------------------------------------------------------------


def test_admin_patch_issuer(world: World, clock: FrozenClock, engine: Engine) -> None:
    client: TestClient = world.client
    with Session(engine) as s:
        issued = create_admin_token(s, AdminTokenCreate(name="t", scopes=sorted(ALL_SCOPES)),
                                    now=clock(), by="test")
        s.commit()
    auth = {"Authorization": f"Bearer {issued.token}"}
    r = client.patch(f"/v1/issuers/{IDP}", headers=auth,
                     json={"allowed_clients": ["mobile"], "agent_namespaces": []})
    assert r.status_code == 200, r.text
    assert (r.json()["allowed_clients"], r.json()["agent_namespaces"]) == (["mobile"], [])
    # this replica applies it at once
    view = world.broker.snapshot.issuers[IDP]
    assert (view.allowed_clients, view.agent_namespaces) == (frozenset({"mobile"}), ())
    for body, field in (({"allowed_clients": ["a b"]}, "allowed_clients"),
                        ({"allowed_clients": [""]}, "allowed_clients"),
                        ({"agent_namespaces": ["spiffe://td/a\n"]}, "agent_namespaces"),
                        ({"agent_namespaces": ["not-spiffe"]}, "agent_namespaces"),
                        ({"audiences": ["x"]}, "audiences")):
        r = client.patch(f"/v1/issuers/{IDP}", headers=auth, json=body)
        assert r.status_code == 422, body
        assert r.json()["error"] == "invalid_request"
        assert field in r.json()["error_description"]
    assert world.broker.snapshot.issuers[IDP].allowed_clients == frozenset({"mobile"})
    r = client.patch("/v1/issuers/https://nobody.test", headers=auth, json={})
    assert r.status_code == 404


def test_explain_shows_the_binding_gates(world: World, clock: FrozenClock,
                                         engine: Engine) -> None:
    with Session(engine) as s:
        issued = create_admin_token(s, AdminTokenCreate(name="t", scopes=sorted(ALL_SCOPES)),
                                    now=clock(), by="test")
        s.commit()
    auth = {"Authorization": f"Bearer {issued.token}"}
    _configure(engine, clock, {"acts_for": [{"issuer": IDP, "claims": {"tenant": "acme"}}]})
    world.refresh()
    ask = {"gateway": DEV_GATEWAY, "agent": PLANNER, "audience": "dev.writ.local",
           "scope": "mail.send"}

    def explain(claims: dict[str, Any]) -> dict[str, Any]:
        r = world.client.post("/v1/decisions/explain", headers=auth, json={
            **ask, "user": {"issuer": IDP, "sub": "alice", "claims": claims}})
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    body = explain({"client_id": USER_CLIENT, "tenant": "acme"})
    assert body["decision"] == "issue", body
    gates = {g["gate"]: g for g in body["gates"]}
    assert [g["gate"] for g in body["gates"]][:6] == [
        "exchange", "user_client", "request", "subject", "gateway", "enrollment"]
    assert body["gates"][6]["gate"] == "tenancy"
    assert gates["user_client"]["detail"] == f"issued to client {USER_CLIENT}, allowed for {IDP}"
    assert gates["tenancy"]["detail"] == (
        f"{IDP} serves {PLANNER}; the charter's acts_for admits the user")
    for claims, gate, reason in (
            ({"client_id": "other"}, "user_client", "subject_token_client_not_allowed"),
            ({"client_id": USER_CLIENT, "tenant": "globex"}, "tenancy", "acts_for_claim"),
            ({"tenant": "acme", "azp": 1}, "user_client", "subject_token_client_malformed")):
        body = explain(claims)
        assert (body["decision"], body["reason"]) == ("refuse", reason)
        refused = [g for g in body["gates"] if g["result"] == "refused"]
        assert [(g["gate"], g["reason"]) for g in refused] == [(gate, reason)]
    # explaining mints and audits no token
    assert token_rows(engine) == []


# --- a delegate acts for the user only as the first agent could -------------------------------


@pytest.mark.parametrize(("config", "reason"), [
    ({"issuer": {"agent_namespaces": [PLANNER]}}, "issuer_agent_namespace"),
    ({"issuer": {"agent_namespaces": [PLANNER, "spiffe://dev.writ.local/agents/mail"]}},
     "issuer_agent_namespace"),
    ({"mailer_acts_for": [{"issuer": IDP, "subjects": ["bob"]}]}, "acts_for_subject"),
    ({"mailer_acts_for": [{"issuer": "https://other-idp.test"}]}, "acts_for_issuer"),
    # the user's claims are not in a Txn-Token: a claim rule cannot admit a delegate
    ({"mailer_acts_for": [{"issuer": IDP, "claims": {"tenant": "acme"}}]}, "acts_for_claim"),
], ids=["issuer-serves-first-agent-only", "namespace-prefix-not-segment",
        "delegate-acts-for-other-users", "delegate-acts-for-other-issuer",
        "delegate-requires-claims"])
def test_replacement_checks_the_delegates_tenancy(config: dict[str, Any], reason: str,
                                                  world: World, clock: FrozenClock,
                                                  engine: Engine) -> None:
    parent = world.obo(PLANNER)
    if "issuer" in config:
        _configure(engine, clock, config)
    if "mailer_acts_for" in config:
        charter = Charter.model_validate({**CHARTERS[MAILER],
                                          "acts_for": config["mailer_acts_for"]})
        with Session(engine) as s:
            store.update_agent(s, MAILER, AgentUpdate(charter=charter), now=clock(), by="t")
            s.commit()
    world.refresh()
    before = len(token_rows(engine))
    r = world.post(world.req.replacement(parent, MAILER, clock()))
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "access_denied"
    rows = token_rows(engine)[before:]
    assert [(row.decision, row.reason, row.jti) for row in rows] == [("denied", reason, None)]
    # still serving: the first agent's own transaction goes on
    assert world.post(world.req.on_behalf_of(world.idp.mint(now=clock()), PLANNER,
                                             clock())).status_code == 200


def test_replacement_refused_once_the_users_issuer_is_removed(world: World, clock: FrozenClock,
                                                             engine: Engine) -> None:
    from registry.issuers import delete_issuer

    parent = world.obo(PLANNER)
    with Session(engine) as s:
        delete_issuer(s, IDP)
        s.commit()
    world.refresh()
    r = world.post(world.req.replacement(parent, MAILER, clock()))
    assert (r.status_code, r.json()) == (400, {
        "error": "access_denied", "error_description": "the user's issuer is no longer trusted"})
    assert token_rows(engine)[-1].reason == "issuer_not_trusted"


def test_replacement_admits_a_delegate_the_user_is_served_by(world: World) -> None:
    token = world.chain(PLANNER, MAILER, SEARCH)
    assert decode(token)[1]["sub"] == ALICE


def test_cli_explain_with_a_user(data_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    app = typer.Typer()
    register_admin(app)
    register_tools(app)
    app.add_typer(issuers_app, name="issuers")
    writ = Writ(app, data_dir)
    agent, gateway = "spiffe://example.org/agents/mailer", "spiffe://example.org/gw"
    charter = tmp_path / "charter.json"
    charter.write_text(json.dumps({"purpose": "mails", "scopes": ["mail.send"], "acts_for": [
        {"issuer": "https://idp.example", "subjects": ["*@acme.example"]}]}))
    writ.ok("agents", "enroll", "--spiffe-id", agent, "--owner", "ops", "--charter", str(charter))
    writ.ok("gateways", "add", "--client-id", gateway, "--namespace",
            "spiffe://example.org/agents/**")
    writ.ok("bounds", "set", "spiffe://example.org/agents/**", "--tag", "*", "--scope", "*")
    writ.ok("issuers", "add", "https://idp.example", "--audience", "writ",
            "--allowed-client", "webapp", "--agent-namespace", "spiffe://example.org/agents/**")

    def explain(user: dict[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = json.loads(writ.ok(
            "explain", "--gateway", gateway, "--agent", agent, "--audience", "dev.writ.local",
            "--scope", "mail.send", "--user", json.dumps(user), "--json").stdout)
        return answer

    ok = explain({"issuer": "https://idp.example", "sub": "dana@acme.example",
                  "claims": {"client_id": "webapp"}})
    assert ok["decision"] == "issue", ok
    assert {g["gate"] for g in ok["gates"]} >= {"user_client", "tenancy"}
    for user, reason in (
            ({"issuer": "https://idp.example", "sub": "eve@globex.example"}, "acts_for_subject"),
            ({"issuer": "https://idp.example", "sub": "dana@acme.example",
              "claims": {"azp": "mobile"}}, "subject_token_client_not_allowed"),
            ({"issuer": "https://other.example", "sub": "dana@acme.example"},
             "subject_token_unknown_issuer")):
        answer = explain(user)
        assert (answer["decision"], answer["reason"]) == ("refuse", reason)
    writ.fails("explain", "--gateway", gateway, "--agent", agent, "--user", "[1]",
               message="--user must be a JSON object")


def test_access_token_profile_is_bound_too(world: World, clock: FrozenClock,
                                           engine: Engine) -> None:
    from jwks.claims import TOKEN_TYPE_ACCESS_TOKEN
    from tests.world import MAIL_TOOL

    now = clock()

    def ask(**claims: Any) -> Any:
        return world.post(world.req.on_behalf_of(
            world.idp.mint(now=now, **claims), PLANNER, now,
            requested_token_type=TOKEN_TYPE_ACCESS_TOKEN, resource=MAIL_TOOL,
            request_details={"action": "send"}))

    assert ask().status_code == 200
    r = ask(client_id="other-app")
    assert (r.status_code, r.json()["error"]) == (400, "invalid_request")
    assert token_rows(engine)[-1].reason == "subject_token_client_not_allowed"
    _configure(engine, clock, {"acts_for": [{"issuer": IDP, "claims": {"tenant": "acme"}}]})
    world.refresh()
    r = ask()
    assert (r.status_code, r.json()["error"]) == (400, "access_denied")
    assert token_rows(engine)[-1].reason == "acts_for_claim"
    assert ask(tenant="acme").status_code == 200
