"""Profile "delegation / replacement": exact claims of a replacement, act nesting and
act_chain across three hops, tctx carried over, exp bounded by the parent, the hop-limit
setting, a tool's call-chain requirement, and every refusal of
tests/vectors/delegation_refusals.json with its exact error and audited reason."""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from joserfc.jwk import ECKey
from sqlalchemy import Engine, event
from sqlmodel import Session

from broker.cli.dev import DEV_GATEWAY, DevTrustDomain
from broker.revocation.revoked import RevocationEntry, RevocationKind
from broker.settings import Settings
from jwks import (
    ChainRequirementFailed,
    StaticKeys,
    TxnTokenVerifier,
    principal,
    require_current_actor,
    require_prior_actor,
)
from jwks.claims import TOKEN_TYPE_ACCESS_TOKEN
from registry import store, tool_store
from registry.charter import ToolGrant
from registry.models import AgentUpdate, Status
from registry.tools import parse_tool_document
from tests.conftest import ISSUER, FrozenClock
from tests.forge import b64, forge
from tests.idp import TestIssuer
from tests.world import (
    AGENTS,
    ALICE,
    IDP,
    MAIL_TOOL,
    MAILER,
    PLANNER,
    SEARCH,
    TD,
    TXN_TOOL,
    World,
    decode,
    open_world,
    token_rows,
)

VECTORS = json.loads(
    (Path(__file__).parents[1] / "vectors" / "delegation_refusals.json").read_text()
)


def verifier(world: World, clock: FrozenClock) -> TxnTokenVerifier:
    return TxnTokenVerifier(StaticKeys(world.jwks()), issuer=ISSUER, audience=TD, clock=clock)


def test_replacement_exact(world: World, clock: FrozenClock, engine: Engine) -> None:
    parent = world.obo(PLANNER, scope="mail.send mail.read",
                       request_details={"tool": TXN_TOOL, "action": "view",
                                        "resource": "cal/7",
                                        "authorization_details": [{"type": "cal"}]},
                       request_context={"environment": "prod", "client_ip": "192.0.2.1"})
    _, p = decode(parent)
    clock.advance(10)
    r = world.post(world.req.replacement(
        parent, MAILER, clock(), scope="mail.send",
        request_details={"intent": "send it", "act": {"sub": "spiffe://evil/x"},
                         "act_chain": [{"sub": "spiffe://evil/y", "iat": 1}],
                         "agentic_ctx": {"chain_metadata": {"hop_count": 0}}},
        request_context={"client_ip": "192.0.2.9", "act": {"sub": "spiffe://evil/z"}}))
    assert r.status_code == 200, r.text
    body = r.json()
    token = body.pop("access_token")
    assert body == {"issued_token_type": "urn:ietf:params:oauth:token-type:txn_token",
                    "token_type": "N_A", "expires_in": 240, "scope": "mail.send",
                    "tool_endpoint": "https://cal.example.com/api"}
    header, c = decode(token)
    assert header["typ"] == "txntoken+jwt"
    mailer = world.broker.snapshot.agents[MAILER]
    t = int(clock())
    assert c == {
        "iss": ISSUER, "aud": TD, "iat": t, "exp": t + 240,
        "txn": p["txn"],  # the transaction is kept
        "jti": c["jti"],
        "sub": ALICE,  # kept
        "sub_id": {"format": "iss_sub", "iss": IDP, "sub": "alice"},
        "scope": "mail.send",
        # draft-ietf-oauth-transaction-tokens-10: the call chain of requesting workloads
        "req_wl": f"{DEV_GATEWAY},{DEV_GATEWAY}",
        # RFC 8693 §4.1: the current actor outermost, the previous one nested
        "act": {"sub": MAILER, "act": {"sub": PLANNER}},
        "act_chain": [{"sub": PLANNER, "iat": p["iat"], "jti": p["jti"]}],
        "tctx": p["tctx"],  # carried over unchanged
        "rctx": {"req_ip": "192.0.2.9", "gateway_ip": "testclient", "gateway_ip_source": "peer",
                 "env": "prod"},
        "agentic_ctx": {
            # agents-02 §3.6.1: the delegate acts now; the planner started
            "current_actor": MAILER,
            "originator": PLANNER,
            "prov": {"manifest_hash": mailer.charter_hash},
            "identity": {"workload_id": MAILER},
            "chain_metadata": {"hop_count": 2, "txn_path": [PLANNER, MAILER]},
        },
    }
    assert c["jti"] != p["jti"]
    assert p["tctx"] == {"purpose": "plans the user's errands", "tool": TXN_TOOL,
                         "action": "view", "resource": "cal/7",
                         "authorization_details": [{"type": "cal"}]}
    rec = token_rows(engine)[-1]
    assert (rec.decision, rec.agent, rec.subject, rec.txn) == ("issued", MAILER, ALICE,
                                                               p["txn"])
    assert rec.detail["profile"] == "replacement"
    assert (rec.detail["parent_jti"], rec.detail["delegator"], rec.detail["hop_count"]) == (
        p["jti"], PLANNER, 2)


def test_three_hops_verified_downstream(world: World, clock: FrozenClock) -> None:
    token = world.chain(PLANNER, MAILER, SEARCH)
    claims = verifier(world, clock).verify(token)
    assert principal(claims) == ALICE
    assert claims.actor == SEARCH
    assert claims.actors == (PLANNER, MAILER, SEARCH)
    assert claims.hop_count == 3
    assert claims.raw["act"] == {"sub": SEARCH, "act": {"sub": MAILER, "act": {"sub": PLANNER}}}
    require_prior_actor(claims, PLANNER)
    require_prior_actor(claims, f"{AGENTS}/**")
    require_current_actor(claims, SEARCH)
    with pytest.raises(ChainRequirementFailed):
        require_prior_actor(claims, SEARCH)  # the current actor is not an earlier one
    assert claims.scope == frozenset({"search.query", "mail.read"})


def test_autonomous_parent_keeps_agent_as_subject(world: World, clock: FrozenClock) -> None:
    parent = world.issue(world.req.autonomous(PLANNER, clock(), scope="search.query"))
    _, c = decode(world.replace(parent, SEARCH))
    assert (c["sub"], c["act"], c["scope"]) == (PLANNER, {"sub": SEARCH, "act": {"sub": PLANNER}},
                                                "search.query")
    assert "sub_id" not in c


def test_exp_never_outlives_parent(world: World, clock: FrozenClock) -> None:
    parent = world.obo(PLANNER)
    _, p = decode(parent)
    clock.advance(250)  # 50 s left on the parent; the mailer's charter allows 240
    r = world.post(world.req.replacement(parent, MAILER, clock(),
                                         request_details={"ttl_s": 3600}))
    assert r.status_code == 200, r.text
    _, c = decode(r.json()["access_token"])
    assert c["exp"] == p["exp"]
    assert r.json()["expires_in"] == 50


def test_parent_expired_at_exp_exactly(world: World, clock: FrozenClock) -> None:
    parent = world.obo(PLANNER)
    clock.advance(300)  # no leeway for an expired parent
    r = world.post(world.req.replacement(parent, MAILER, clock()))
    assert r.json()["error"] == "invalid_request"


def test_hop_limit_is_a_setting(settings: Settings, engine: Engine, seeded: DevTrustDomain,
                                clock: FrozenClock, idp: TestIssuer) -> None:
    settings = settings.model_copy(update={"max_delegation_hops": 2})
    with open_world(settings, engine, seeded, clock, idp) as w:
        token = w.chain(PLANNER, MAILER)
        r = w.post(w.req.replacement(token, SEARCH, clock()))
        assert r.json() == {"error": "access_denied",
                            "error_description": "the delegation chain would exceed its hop "
                                                 "limit"}


def test_tool_call_chain_requirement_uses_earlier_actors(world: World, clock: FrozenClock,
                                                         engine: Engine) -> None:
    """A tool's ``requires_chain`` is met by the actors before the current one: the same
    ``jwks.chain`` test a downstream service runs with ``require_prior_actor``."""
    pay = "https://tools.example.com/pay"
    doc = {"tool_id": pay, "name": "pay", "endpoint": "https://pay.example.com/api",
           "audience": "https://pay.example.com", "scopes": ["search.query"],
           "tags": ["payments"], "actions": {"view": {"risk": "low"}}}
    with Session(engine) as s:
        tool_store.create_tool(s, parse_tool_document(doc), source=tool_store.ToolSource.pinned,
                               times=None, now=clock(), by="test")
        for agent in (PLANNER, MAILER, SEARCH):
            view = world.broker.snapshot.agents[agent]
            charter = view.charter.model_copy(update={
                "tools": (*view.charter.tools, ToolGrant(tool=pay, actions=("view",)))})
            store.update_agent(s, agent, AgentUpdate(charter=charter), now=clock(), by="test")
        s.commit()
    world.refresh()
    details = {"tool": pay, "action": "view"}
    from_planner = world.obo(PLANNER, scope="search.query", request_details=details)
    from_mailer = world.obo(MAILER, scope="search.query", request_details=details)
    with Session(engine) as s:  # now the tool wants the planner earlier in the chain
        tool_store.update_tool_document(
            s, pay, parse_tool_document({**doc, "requires_chain": [PLANNER]}), times=None,
            now=clock())
        s.commit()
    world.refresh()
    r = world.post(world.req.replacement(from_mailer, SEARCH, clock()))
    assert r.json() == {"error": "access_denied",
                        "error_description": "the tool's call-chain requirements are not met"}
    assert token_rows(engine)[-1].reason == "chain_requirement_unmet"
    token = world.replace(world.replace(from_planner, MAILER), SEARCH)
    require_prior_actor(verifier(world, clock).verify(token), PLANNER)


# --- refusals --------------------------------------------------------------------------


def _mutate(world: World, parent: str, how: str | None, clock: FrozenClock) -> str:
    head, payload, sig = parent.split(".")
    claims = json.loads(b64decode(payload))
    header = json.loads(b64decode(head))
    if how is None:
        return parent
    if how == "tamper":
        claims["scope"] += " plan.write"
        return f"{head}.{b64(json.dumps(claims).encode())}.{sig}"
    if how == "forge_act":
        claims["act"] = {"sub": PLANNER, "act": {"sub": f"{AGENTS}/chain/a1"}}
        claims["act_chain"] = [{"sub": f"{AGENTS}/chain/a1", "iat": claims["iat"]}]
        return f"{head}.{b64(json.dumps(claims).encode())}.{sig}"
    if how == "foreign_key":
        return forge(header, claims, key=ECKey.generate_key("P-256", private=True))
    if how == "unknown_kid":
        return forge({**header, "kid": "not-a-writ-key"}, claims,
                     key=ECKey.generate_key("P-256", private=True))
    if how == "alg_none":
        return forge({**header, "alg": "none"}, claims)
    if how == "garbage":
        return "not-a-token"
    if how == "access_token":
        now = clock()
        r = world.post(world.req.on_behalf_of(world.idp.mint(now=now), PLANNER, now,
                                              requested_token_type=TOKEN_TYPE_ACCESS_TOKEN,
                                              resource=MAIL_TOOL,
                                              request_details={"action": "read"}))
        token: str = r.json()["access_token"]
        return token
    if how == "expire":
        clock.advance(claims["exp"] - clock() + 1)
        return parent
    kind = {"revoke_jti": RevocationKind.jti, "revoke_txn": RevocationKind.txn}[how]
    world.broker.revocations.add(RevocationEntry(
        kind, claims[kind.value], revoked_at=clock(), expires_at=claims["exp"]))
    return parent


def b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _registry(world: World, engine: Engine, action: str | None, delegate: str,
              delegator: str, clock: FrozenClock) -> None:
    if action is None:
        return
    with Session(engine) as s:
        if action == "suspend_delegate":
            store.set_agent_status(s, delegate, Status.suspended, now=clock())
        elif action == "suspend_delegator":
            store.set_agent_status(s, delegator, Status.suspended, now=clock())
        elif action == "remove_delegate":
            store.delete_agent(s, delegate)
        s.commit()
    world.refresh()


@pytest.mark.parametrize("vector", VECTORS, ids=[v["id"] for v in VECTORS])
def test_refusals(vector: dict[str, Any], world: World, clock: FrozenClock, engine: Engine,
                  seeded: DevTrustDomain) -> None:
    chain = vector.get("chain", [PLANNER])
    extra: dict[str, Any] = {}
    if "parent_scope" in vector:
        extra["scope"] = vector["parent_scope"]
    if "parent_details" in vector:
        extra["request_details"] = vector["parent_details"]
    if "parent_context" in vector:
        extra["request_context"] = vector["parent_context"]
    if vector.get("autonomous"):
        parent = world.issue(world.req.autonomous(chain[0], clock(), **extra))
    else:
        parent = world.obo(chain[0], **extra)
    for agent in chain[1:]:
        parent = world.replace(parent, agent)
    delegate = vector.get("delegate", MAILER)
    parent = _mutate(world, parent, vector.get("mutate"), clock)
    _registry(world, engine, vector.get("registry"), delegate, chain[-1], clock)
    seq_before = max((r.seq for r in token_rows(engine)), default=0)
    params = world.req.replacement(parent, delegate, clock(), **vector.get("params", {}))
    if "actor" in vector:
        params["actor_token"] = seeded.mint_svid(vector["actor"]["sub"],
                                                 vector["actor"].get("aud", ISSUER), now=clock())
    for name in vector.get("drop_params", []):
        params.pop(name, None)
    r = world.post(params)
    assert r.status_code == vector["status"], r.text
    assert r.headers["cache-control"] == "no-store"
    assert r.json() == {"error": vector["error"], "error_description": vector["description"]}
    rows = [row for row in token_rows(engine) if row.seq > seq_before]
    assert [(row.decision, row.reason) for row in rows] == [("denied", vector["reason"])]
    assert rows[0].jti is None and rows[0].txn is None  # nothing was minted


def test_refusal_audit_names_the_user(world: World, clock: FrozenClock, engine: Engine) -> None:
    parent = world.obo(PLANNER)
    world.post(world.req.replacement(parent, f"{AGENTS}/outsider", clock()))
    rec = token_rows(engine)[-1]
    assert (rec.reason, rec.subject, rec.agent) == ("delegation_not_allowed", ALICE,
                                                    f"{AGENTS}/outsider")
    assert rec.detail["subject_token_sha256"] and rec.detail["actor_token_sha256"]



def test_token_path_reads_no_database_row(world: World, clock: FrozenClock,
                                          engine: Engine) -> None:
    """DESIGN §6: on-behalf-of and replacement requests run no SQL on the request's own
    thread; only Writ's background threads (audit writer, snapshot poll...) touch the
    database."""
    parent = world.obo(PLANNER)  # warm: the issuer's JWKS is fetched once, over HTTP
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not threading.current_thread().name.startswith("writ-"):
            statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        token = world.replace(world.obo(PLANNER), MAILER)
        world.replace(token, SEARCH)
        world.replace(parent, SEARCH)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert statements == []
