"""The two token profiles (``WRIT_TOKEN_PROFILE``), the REQUIRED ``agentic_ctx`` members of
agents-02 §3.6.1, no ``act`` for an autonomous agent (§3.2.2), a user token's own ``act``
copied unmodified (§3.7.1), ``req_wl`` keeping the call chain of requesting workloads
(draft-ietf-oauth-transaction-tokens-10) and revocation by a gateway reaching replacements
minted through another gateway, and ``sub`` unique in the trust domain."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from broker.auth.resource_servers import ResourceServerCreate, create_resource_server
from broker.claims.txn_token import TokenProfile, user_subject
from broker.cli.dev import DEV_GATEWAY, DevTrustDomain
from broker.revocation.revoked import RevocationEntry, RevocationKind
from broker.settings import Settings
from jwks import (
    ChainRequirementFailed,
    StaticKeys,
    TxnTokenClaims,
    TxnTokenVerifier,
    acted_earlier,
    principal,
    require_current_actor,
    require_prior_actor,
)
from registry import store
from registry.models import GatewayCreate
from tests.conftest import ISSUER, FrozenClock
from tests.idp import TestIssuer
from tests.world import (
    AGENTS,
    ALICE,
    IDP,
    MAILER,
    PLANNER,
    SEARCH,
    TD,
    USER_CLIENT,
    USER_SCOPE,
    World,
    decode,
    open_world,
)

OTHER_GW = f"spiffe://{TD}/gateway/other"
RS = f"spiffe://{TD}/services/reader"
UPSTREAM = {"sub": "https://client.example", "act": {"sub": "https://idjag.example"}}


@pytest.fixture
def world02(settings: Settings, engine: Engine, seeded: DevTrustDomain, clock: FrozenClock,
            idp: TestIssuer) -> Iterator[World]:
    """The agent world on a deployment of profile agents-02."""
    profiled = settings.model_copy(update={"token_profile": TokenProfile.agents_02})
    with open_world(profiled, engine, seeded, clock, idp) as w:
        yield w


def verify(world: World, clock: FrozenClock, token: str) -> TxnTokenClaims:
    return TxnTokenVerifier(StaticKeys(world.jwks()), issuer=ISSUER, audience=TD,
                            clock=clock).verify(token)


def test_profile_setting_defaults_to_writ(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().token_profile is TokenProfile.writ
    monkeypatch.setenv("WRIT_TOKEN_PROFILE", "agents-02")
    assert Settings().token_profile is TokenProfile.agents_02
    monkeypatch.setenv("WRIT_TOKEN_PROFILE", "agents-01")
    with pytest.raises(ValueError, match="token_profile"):
        Settings()


# --- the subject -------------------------------------------------------------------------


@pytest.mark.parametrize(("a", "b"), [
    (("https://idp.a", "alice"), ("https://idp.b", "alice")),
    (("https://x.example/", "#a"), ("https://x.example/#", "a")),
    (("https://x.example", "a#b"), ("https://x.example#a", "b")),
    (("https://x.example", "%23"), ("https://x.example", "#")),
], ids=["same-user-two-issuers", "hash-in-subject", "hash-split", "percent"])
def test_user_subject_is_unique_per_issuer_and_subject(a: tuple[str, str],
                                                       b: tuple[str, str]) -> None:
    # draft-ietf-oauth-transaction-tokens-10 §JWT Body Claims: unique in the trust domain
    assert user_subject(*a) != user_subject(*b)


def test_user_subject_form() -> None:
    assert user_subject("https://login.example.com/realms/acme", "alice@example.com") == (
        "https://login.example.com/realms/acme#alice@example.com")
    assert user_subject("https://idp.test", "a b#c%") == "https://idp.test#a%20b%23c%25"


def test_two_trusted_issuers_never_share_a_sub(world: World, clock: FrozenClock,
                                               engine: Engine) -> None:
    from registry.issuers import TrustedIssuerCreate, create_issuer

    other = TestIssuer("https://idp2.test")
    with Session(engine) as s:
        create_issuer(s, TrustedIssuerCreate(
            issuer=other.issuer, audiences=[other.audience], algorithms=[other.alg],
            allowed_clients=[USER_CLIENT], agent_namespaces=[f"{AGENTS}/**"]),
            now=clock(), by="test")
        s.commit()
    world.refresh()
    transports = {IDP: world.idp.transport(), other.issuer: other.transport()}

    def route(request: Any) -> Any:
        origin = f"{request.url.scheme}://{request.url.host}"
        return transports[origin].handle_request(request)

    import httpx

    world.broker.user_tokens.use_http(httpx.Client(transport=httpx.MockTransport(route)))
    now = clock()
    subs = []
    for idp in (world.idp, other):
        token = world.issue(world.req.on_behalf_of(idp.mint("alice", now=now, scope=USER_SCOPE),
                                                   PLANNER, now, scope="mail.send"))
        claims = decode(token)[1]
        assert claims["sub_id"] == {"format": "iss_sub", "iss": idp.issuer, "sub": "alice"}
        subs.append(claims["sub"])
    assert subs == [ALICE, "https://idp2.test#alice"]


# --- profile writ (the default) ---------------------------------------------------------


def test_autonomous_token_has_no_act(world: World, clock: FrozenClock) -> None:
    token = world.issue(world.req.autonomous(PLANNER, clock(), scope="mail.send"))
    claims = decode(token)[1]
    assert "act" not in claims and "act_chain" not in claims
    assert claims["sub"] == PLANNER
    assert claims["agentic_ctx"]["current_actor"] == PLANNER
    assert claims["agentic_ctx"]["originator"] == PLANNER
    assert claims["agentic_ctx"]["chain_metadata"]["hop_count"] == 1
    verified = verify(world, clock, token)
    assert (verified.actor, verified.actors, verified.hop_count) == (PLANNER, (PLANNER,), 1)
    require_current_actor(verified, PLANNER)
    assert principal(verified) == PLANNER


def test_replacement_of_an_autonomous_token_nests_act(world: World, clock: FrozenClock) -> None:
    parent = world.issue(world.req.autonomous(PLANNER, clock(), scope="mail.send"))
    token = world.replace(parent, MAILER)
    claims = decode(token)[1]
    assert claims["act"] == {"sub": MAILER, "act": {"sub": PLANNER}}
    assert [h["sub"] for h in claims["act_chain"]] == [PLANNER]
    assert claims["sub"] == PLANNER
    verified = verify(world, clock, token)
    assert verified.actors == (PLANNER, MAILER)


def test_user_act_is_nested_unmodified(world: World, clock: FrozenClock) -> None:
    now = clock()
    user = world.idp.mint("alice", now=now, scope=USER_SCOPE, act=UPSTREAM)
    token = world.issue(world.req.on_behalf_of(user, PLANNER, now, scope="mail.read"))
    claims = decode(token)[1]
    # agents-02 §3.7.1 copied unmodified; RFC 8693 §4.1 the agent outermost
    assert claims["act"] == {"sub": PLANNER, "act": UPSTREAM}
    verified = verify(world, clock, token)
    assert (verified.actor, verified.actors) == (PLANNER, (PLANNER,))
    # and it stays beneath every later actor
    token = world.replace(world.replace(token, MAILER), SEARCH)
    claims = decode(token)[1]
    assert claims["act"] == {"sub": SEARCH, "act": {"sub": MAILER, "act": {
        "sub": PLANNER, "act": UPSTREAM}}}
    verified = verify(world, clock, token)
    assert verified.actors == (PLANNER, MAILER, SEARCH)
    require_prior_actor(verified, PLANNER)


def test_user_act_copied_into_an_access_token(world: World, clock: FrozenClock) -> None:
    from jwks.claims import TOKEN_TYPE_ACCESS_TOKEN
    from tests.world import MAIL_TOOL

    now = clock()
    user = world.idp.mint("alice", now=now, scope=USER_SCOPE, act=UPSTREAM)
    token = world.issue(world.req.on_behalf_of(
        user, PLANNER, now, requested_token_type=TOKEN_TYPE_ACCESS_TOKEN, resource=MAIL_TOOL,
        scope="mail.send", request_details={"action": "send"}))
    assert decode(token)[1]["act"] == {"sub": PLANNER, "act": UPSTREAM}
    from jwks import AT_JWT_TYP
    from tests.world import MAIL_AUDIENCE

    verified = TxnTokenVerifier(StaticKeys(world.jwks()), issuer=ISSUER,
                                audience=MAIL_AUDIENCE, typ=AT_JWT_TYP,
                                clock=clock).verify(token)
    assert (verified.subject, verified.actor, verified.actors) == (ALICE, PLANNER, (PLANNER,))


@pytest.mark.parametrize("act", [
    "https://client.example", {"client_id": "x"}, {"sub": ""}, {"sub": "a", "act": ["b"]},
], ids=["string", "no-sub", "empty-sub", "nested-array"])
def test_malformed_user_act_is_refused(world: World, clock: FrozenClock, act: Any) -> None:
    now = clock()
    user = world.idp.mint("alice", now=now, scope=USER_SCOPE, act=act)
    r = world.post(world.req.on_behalf_of(user, PLANNER, now, scope="mail.send"))
    assert r.status_code == 400
    assert r.json() == {"error": "invalid_request",
                        "error_description": "subject_token is not a valid user access token"}


# --- profile agents-02 --------------------------------------------------------------------


def test_agents_02_act_is_immutable(world02: World, clock: FrozenClock) -> None:
    world = world02
    t1 = world.obo(PLANNER, scope="mail.send search.query mail.read")
    t3 = world.replace(world.replace(t1, MAILER), SEARCH)
    c1, c3 = decode(t1)[1], decode(t3)[1]
    assert c1["act"] == c3["act"] == {"sub": PLANNER}
    assert "act_chain" not in c3
    assert c3["agentic_ctx"]["current_actor"] == SEARCH
    assert c3["agentic_ctx"]["originator"] == PLANNER
    assert c3["agentic_ctx"]["chain_metadata"] == {"hop_count": 3,
                                                   "txn_path": [PLANNER, MAILER, SEARCH]}
    assert (c3["sub"], c3["txn"]) == (ALICE, c1["txn"])
    # the jwks verifier and its chain helpers read this shape too
    verified = verify(world, clock, t3)
    assert verified.actor == SEARCH
    assert verified.actors == (PLANNER, MAILER, SEARCH)
    assert verified.originator == PLANNER
    require_current_actor(verified, SEARCH)
    require_prior_actor(verified, MAILER)
    assert acted_earlier(verified, PLANNER) and not acted_earlier(verified, SEARCH)
    with pytest.raises(ChainRequirementFailed):
        require_current_actor(verified, PLANNER)
    assert principal(verified) == ALICE


def test_agents_02_user_act_is_the_token_act(world02: World, clock: FrozenClock) -> None:
    world = world02
    now = clock()
    user = world.idp.mint("alice", now=now, scope=USER_SCOPE, act=UPSTREAM)
    token = world.issue(world.req.on_behalf_of(user, PLANNER, now, scope="mail.send"))
    assert decode(token)[1]["act"] == UPSTREAM
    token = world.replace(token, MAILER)
    claims = decode(token)[1]
    assert claims["act"] == UPSTREAM
    verified = verify(world, clock, token)
    assert verified.actors == (PLANNER, MAILER)


def test_agents_02_autonomous_chain_never_gains_act(world02: World, clock: FrozenClock) -> None:
    world = world02
    parent = world.issue(world.req.autonomous(PLANNER, clock(), scope="mail.send"))
    token = world.replace(parent, MAILER)
    claims = decode(token)[1]
    assert "act" not in claims and "act_chain" not in claims
    verified = verify(world, clock, token)
    assert verified.actors == (PLANNER, MAILER)


def test_agents_02_delegation_rules_read_the_chain(world02: World, clock: FrozenClock) -> None:
    # the cycle rule sees the agents named only in agentic_ctx
    world = world02
    token = world.replace(world.obo(PLANNER), MAILER)
    r = world.post(world.req.replacement(token, PLANNER, clock()))
    assert r.status_code == 400, r.text
    assert r.json() == {"error": "access_denied",
                        "error_description": "the agent has already acted in this transaction"}


# --- the call chain of requesting workloads -------------------------------------------------


@pytest.fixture
def two_gateways(world: World, engine: Engine, clock: FrozenClock) -> World:
    with Session(engine) as s:
        store.create_gateway(s, GatewayCreate(client_id=OTHER_GW,
                                              agent_namespaces=[f"{AGENTS}/**"]), now=clock())
        create_resource_server(s, ResourceServerCreate(client_id=RS, audiences=[TD]),
                               now=clock())
        s.commit()
    world.refresh()
    return world


def _through_other(world: World, parent: str, delegate: str) -> str:
    now = world.clock()
    return world.issue(world.req.replacement(
        parent, delegate, now, client_assertion=world.req.svid(OTHER_GW, now)))


def test_replacement_keeps_the_requesting_workloads(two_gateways: World,
                                                    clock: FrozenClock) -> None:
    world = two_gateways
    t2 = _through_other(world, world.obo(PLANNER), MAILER)
    assert decode(t2)[1]["req_wl"] == f"{DEV_GATEWAY},{OTHER_GW}"
    t3 = world.replace(t2, SEARCH)
    assert decode(t3)[1]["req_wl"] == f"{DEV_GATEWAY},{OTHER_GW},{DEV_GATEWAY}"
    verified = verify(world, clock, t3)
    assert verified.requesting_workloads == (DEV_GATEWAY, OTHER_GW, DEV_GATEWAY)
    assert verified.requesting_workload == DEV_GATEWAY


def _introspect(world: World, token: str) -> dict[str, Any]:
    from urllib.parse import urlencode

    svid = world.req.svid(RS, world.clock())
    r = world.client.post("/introspect", content=urlencode({"token": token}),
                          headers={"Content-Type": "application/x-www-form-urlencoded",
                                   "Authorization": f"Bearer {svid}"})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_revoking_a_gateway_reaches_replacements_through_another(two_gateways: World,
                                                                 clock: FrozenClock) -> None:
    world = two_gateways
    replacement = _through_other(world, world.obo(PLANNER), MAILER)
    body = _introspect(world, replacement)
    assert body["active"] is True and body["client_id"] == OTHER_GW
    now = clock()
    world.broker.revocations.add(RevocationEntry(RevocationKind.gateway, DEV_GATEWAY, now,
                                                 now + 4000))
    assert world.broker.revocations.is_revoked(verify(world, clock, replacement))
    assert _introspect(world, replacement) == {"active": False}
    r = world.post(world.req.replacement(
        replacement, SEARCH, now, client_assertion=world.req.svid(OTHER_GW, now)))
    assert r.status_code == 400
    assert r.json()["error_description"] == "the parent Txn-Token has been revoked"


def test_gateway_revocation_spares_other_chains(two_gateways: World, clock: FrozenClock) -> None:
    world = two_gateways
    now = clock()
    token = world.issue(world.req.autonomous(PLANNER, now, scope="mail.send",
                                             client_assertion=world.req.svid(OTHER_GW, now)))
    world.broker.revocations.add(RevocationEntry(RevocationKind.gateway, DEV_GATEWAY, now,
                                                 now + 4000))
    assert _introspect(world, token)["active"] is True


def test_revocation_by_agent_reaches_tokens_without_act(world02: World,
                                                        clock: FrozenClock) -> None:
    world = world02
    autonomous = world.issue(world.req.autonomous(PLANNER, clock(), scope="mail.send"))
    delegated = world.replace(world.obo(PLANNER), MAILER)  # MAILER only in agentic_ctx
    now = clock()
    revs = world.broker.revocations
    revs.add(RevocationEntry(RevocationKind.agent, MAILER, now, now + 4000))
    assert revs.is_revoked(verify(world, clock, delegated))
    assert not revs.is_revoked(verify(world, clock, autonomous))
    revs.add(RevocationEntry(RevocationKind.agent, PLANNER, now, now + 4000))
    assert revs.is_revoked(verify(world, clock, autonomous))


def test_only_the_last_requester_revokes_a_replacement(two_gateways: World) -> None:
    from urllib.parse import urlencode

    world = two_gateways
    replacement = _through_other(world, world.obo(PLANNER), MAILER)

    def revoke(gateway: str) -> Any:
        return world.client.post("/revoke", content=urlencode({
            "token": replacement,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe",
            "client_assertion": world.req.svid(gateway, world.clock())}),
            headers={"Content-Type": "application/x-www-form-urlencoded"})

    # RFC 7009 §2.1: the token was issued to the gateway that requested it, req_wl's last
    r = revoke(DEV_GATEWAY)
    assert (r.status_code, r.json()["error"]) == (400, "unauthorized_client")
    assert revoke(OTHER_GW).status_code == 200
    assert _introspect(world, replacement) == {"active": False}
