"""A kill switch that reaches the whole chain (docs/revocation.md "Replacements" and
"Suspension and the chain"): revoking a token by ``jti`` revokes every replacement derived
from it, and an agent that may no longer act anywhere in a token's chain stops it from being
replaced again and makes ``/introspect`` answer ``active: false``. Each way in answers the
exact error, mints nothing, and leaves the process serving."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from broker.auth.resource_servers import ResourceServerCreate, create_resource_server
from broker.cli.dev import DEV_GATEWAY
from broker.revocation.revoked import RevocationEntry, RevocationKind, RevocationSet, TokenFacts
from jwks import TxnTokenClaims
from jwks.errors import InvalidToken
from registry import store
from registry.models import AgentUpdate
from tests.admin.test_admin_api import bearer, issue, root  # noqa: F401  (fixtures)
from tests.conftest import ISSUER, FrozenClock
from tests.revocation_kit import FORM, RS, TRUST_DOMAIN, claims_of, form
from tests.world import MAILER, PLANNER, SEARCH, World, token_rows

JWT_SPIFFE = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe"


@pytest.fixture
def rs_world(world: World, engine: Engine, clock: FrozenClock) -> World:
    with Session(engine) as s:
        create_resource_server(s, ResourceServerCreate(client_id=RS, audiences=[TRUST_DOMAIN]),
                               now=clock())
        s.commit()
    world.refresh()
    return world


def active(world: World, token: str) -> bool:
    svid = world.req.td.mint_svid(RS, ISSUER, now=world.clock())
    r = world.client.post("/introspect", content=form(token=token),
                          headers={**FORM, "Authorization": f"Bearer {svid}"})
    assert r.status_code == 200, r.text
    value: bool = r.json()["active"]
    return value


def refused_replacement(world: World, parent: str, delegate: str) -> dict[str, Any]:
    before = len(token_rows(world.engine))
    r = world.post(world.req.replacement(parent, delegate, world.clock()))
    assert r.status_code == 400, r.text
    assert r.headers["cache-control"] == "no-store"
    rows = token_rows(world.engine)[before:]
    # nothing minted: one denied record, no jti, no txn of its own
    assert [(row.decision, row.jti) for row in rows] == [("denied", None)]
    body: dict[str, Any] = r.json()
    body["reason"] = rows[0].reason
    return body


# --- revoking a jti reaches its replacements ------------------------------------------------


def _revoke_rfc7009(world: World, token: str, admin: str) -> None:
    r = world.client.post("/revoke", headers=FORM, content=form(
        token=token, client_assertion_type=JWT_SPIFFE,
        client_assertion=world.req.td.mint_svid(DEV_GATEWAY, ISSUER, now=world.clock())))
    assert r.status_code == 200, r.text


def _revoke_admin(world: World, token: str, admin: str) -> None:
    r = world.client.post("/v1/revocations", headers=bearer(admin),
                          json={"kind": "jti", "value": claims_of(token)["jti"]})
    assert r.status_code == 201, r.text


REVOKE: dict[str, Callable[[World, str, str], None]] = {
    "rfc7009": _revoke_rfc7009, "admin": _revoke_admin}


@pytest.mark.parametrize("how", sorted(REVOKE))
@pytest.mark.parametrize("revoked_hop", [0, 1])
def test_revoking_a_jti_revokes_every_replacement_derived_from_it(
        how: str, revoked_hop: int, rs_world: World, root: str) -> None:  # noqa: F811
    w = rs_world
    t0 = w.obo(PLANNER)
    t1 = w.replace(t0, MAILER)
    t2 = w.replace(t1, SEARCH)
    branch = w.replace(t0, SEARCH)  # a sibling of t1, derived from t0 only
    other = w.chain(PLANNER, MAILER)  # another transaction
    # each replacement names the tokens it derives from
    assert [h.get("jti") for h in claims_of(t2)["act_chain"]] == [
        claims_of(t0)["jti"], claims_of(t1)["jti"]]
    chain = [t0, t1, t2]
    REVOKE[how](w, chain[revoked_hop], root)
    expected = {0: [False, False, False], 1: [True, False, False]}[revoked_hop]
    assert [active(w, t) for t in chain] == expected
    assert active(w, branch) is (revoked_hop != 0)
    assert active(w, other) is True
    for parent in chain[revoked_hop:]:
        assert refused_replacement(w, parent, SEARCH if parent is not t2 else PLANNER) == {
            "error": "invalid_request",
            "error_description": "the parent Txn-Token has been revoked",
            "reason": "subject_token_revoked"}
    # still serving, and the rest of the trust domain is untouched
    assert active(w, w.replace(other, SEARCH)) is True


def test_revoking_a_replacement_leaves_its_parent(rs_world: World, root: str) -> None:  # noqa: F811
    w = rs_world
    t0 = w.obo(PLANNER)
    t1 = w.replace(t0, MAILER)
    _revoke_admin(w, t1, root)
    assert (active(w, t0), active(w, t1)) == (True, False)
    assert active(w, w.replace(t0, MAILER)) is True


# --- an agent that may no longer act, anywhere in the chain ---------------------------------


def _suspend(w: World, admin: str, agent: str) -> None:
    assert w.client.post(f"/v1/agents/{agent}/suspend", headers=bearer(admin)).status_code == 200


def _delete(w: World, admin: str, agent: str) -> None:
    assert w.client.delete(f"/v1/agents/{agent}", headers=bearer(admin)).status_code == 204


def _expire(w: World, admin: str, agent: str) -> None:
    with Session(w.engine) as s:
        store.update_agent(s, agent, AgentUpdate(enrollment_expires_at=w.clock() - 1),
                           now=w.clock(), by="test")
        s.commit()
    w.refresh()


STOP: dict[str, tuple[Callable[[World, str, str], None], str, str]] = {
    "suspended": (_suspend, "chain_agent_suspended", "agent_suspended"),
    "unenrolled": (_delete, "chain_agent_not_enrolled", "agent_not_enrolled"),
    "enrollment-expired": (_expire, "chain_enrollment_expired", "enrollment_expired"),
}


@pytest.mark.parametrize("how", sorted(STOP))
def test_an_earlier_actor_that_may_no_longer_act_stops_the_chain(
        how: str, rs_world: World, root: str) -> None:  # noqa: F811
    w = rs_world
    stop, reason, _ = STOP[how]
    t1 = w.chain(PLANNER, MAILER)  # PLANNER is an earlier actor, MAILER the current one
    t2 = w.replace(t1, SEARCH)
    stop(w, root, PLANNER)
    # introspection: every actor counts, not only the current one
    assert (active(w, t1), active(w, t2)) == (False, False)
    assert refused_replacement(w, t1, SEARCH) == {
        "error": "access_denied",
        "error_description": "an earlier agent of the transaction may no longer act",
        "reason": reason}
    # t2's delegator (SEARCH) is active; PLANNER, two hops back, still stops it
    assert refused_replacement(w, t2, MAILER)["reason"] == reason
    # the process still serves chains that do not hold the stopped agent
    fresh = w.replace(w.obo(MAILER), SEARCH)
    assert active(w, fresh) is True


def test_resuming_the_agent_lets_the_chain_go_on(rs_world: World, root: str) -> None:  # noqa: F811
    w = rs_world
    t1 = w.chain(PLANNER, MAILER)
    _suspend(w, root, PLANNER)
    assert refused_replacement(w, t1, SEARCH)["reason"] == "chain_agent_suspended"
    assert w.client.post(f"/v1/agents/{PLANNER}/resume",
                         headers=bearer(root)).status_code == 200
    assert active(w, t1) is True
    assert active(w, w.replace(t1, SEARCH)) is True


def test_the_chain_gate_sits_between_enrollment_and_delegation(rs_world: World) -> None:
    from broker.grants.replacement import _gates

    parent = TxnTokenClaims.from_claims(claims_of(rs_world.chain(PLANNER, MAILER)))
    names = [name for name, _ in _gates(parent, 5)]
    assert names[names.index("enrollment") + 1:names.index("bounds")] == [
        "chain", "tenancy", "delegation"]


# --- the in-memory set and the claims (pure) -------------------------------------------------


def _entry(jti: str) -> RevocationEntry:
    return RevocationEntry(RevocationKind.jti, jti, 1000.0, 2000.0)


@pytest.mark.parametrize(("act_chain", "revoked"), [
    ([{"sub": "spiffe://td/a", "iat": 1, "jti": "p0"}], True),
    ([{"sub": "spiffe://td/a", "iat": 1, "jti": "x"},
      {"sub": "spiffe://td/b", "iat": 2, "jti": "p0"}], True),
    ([{"sub": "spiffe://td/a", "iat": 1}], False),
    ([{"sub": "spiffe://td/a", "iat": 1, "jti": "P0"}], False),
    ([{"sub": "spiffe://td/a", "iat": 1, "jti": ["p0"]}], False),
    ([{"sub": "spiffe://td/a", "iat": 1, "jti": ""}], False),
    ({"jti": "p0"}, False),
    ("p0", False),
], ids=["parent", "grandparent", "no-jti", "case", "array", "empty", "object", "string"])
def test_set_matches_ancestors(act_chain: Any, revoked: bool) -> None:
    revocations = RevocationSet([_entry("p0")])
    claims = {"jti": "child", "txn": "t", "iat": 1500, "act": {"sub": "spiffe://td/c"},
              "act_chain": act_chain}
    assert revocations.is_revoked(claims) is revoked
    # the child's own jti and the ancestors are distinct facts
    assert TokenFacts.of(claims).jti == "child"


@pytest.mark.parametrize("jti", [1, "", None, ["a"], {"a": 1}],
                         ids=["number", "empty", "null", "array", "object"])
def test_act_chain_jti_must_be_a_string(jti: Any) -> None:
    claims = {"iss": "i", "aud": "a", "sub": "s", "jti": "j", "iat": 1, "exp": 2,
              "act": {"sub": "spiffe://td/b", "act": {"sub": "spiffe://td/a"}},
              "act_chain": [{"sub": "spiffe://td/a", "iat": 1, "jti": jti}]}
    if jti is None:  # absent and null read the same: no ancestry recorded
        assert TxnTokenClaims.from_claims(claims).actor_chain[0].jti is None
        return
    with pytest.raises(InvalidToken, match="jti must be a non-empty string"):
        TxnTokenClaims.from_claims(claims)

