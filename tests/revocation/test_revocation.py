"""Revocation and the kill switch (RFC 7009 ``/revoke``, ``/v1/revocations``) and RFC 7662
``/introspect``: exact wire answers, who may do what, and ``active: false`` at once after a
revocation, a suspension, expiry, or a retired or unknown key."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import ECKey
from sqlalchemy import Engine, select
from sqlmodel import Session

from broker.app import create_app
from broker.audit.writer import AuditRecord, verify_chain
from broker.cli.dev import DEV_AGENT, DEV_GATEWAY, DevTrustDomain
from broker.revocation.revoked import (
    ISSUED_AFTER_GRACE_S,
    RevocationEntry,
    RevocationKind,
    RevocationSet,
    TokenFacts,
)
from broker.revocation.store import Revocation
from broker.settings import Settings
from jwks import IntrospectionCheck, StaticKeys, TokenInactive, TxnTokenClaims, TxnTokenVerifier
from registry import store
from registry.models import GatewayCreate
from tests.admin.test_admin_api import bearer, issue, root  # noqa: F401  (fixtures)
from tests.conftest import ISSUER, T0, FrozenClock
from tests.grants.test_token_endpoint import post_token, token_params
from tests.revocation_kit import FORM, RS, RS_OTHER, TRUST_DOMAIN, BearerSvid, claims_of, form

JWT_SPIFFE = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
OTHER_GW = "spiffe://dev.writ.local/gateway/other"

# --- the in-memory set (pure) ----------------------------------------------------------


def entry(kind: RevocationKind, value: str, at: float = 1000.0) -> RevocationEntry:
    return RevocationEntry(kind, value, at, at + 4000)


CLAIMS = {
    "jti": "j1", "txn": "t1", "iat": 999, "sub": "user-1", "req_wl": "spiffe://td/gw",
    "act": {"sub": "spiffe://td/agents/b", "act": {"sub": "spiffe://td/agents/a"}},
    "act_chain": [{"sub": "spiffe://td/agents/a", "iat": 990}],
}


@pytest.mark.parametrize(("kind", "value"), [
    (RevocationKind.jti, "j1"),
    (RevocationKind.txn, "t1"),
    (RevocationKind.agent, "spiffe://td/agents/b"),
    (RevocationKind.agent, "spiffe://td/agents/a"),
    (RevocationKind.gateway, "spiffe://td/gw"),
    (RevocationKind.subject, "user-1"),
], ids=["jti", "txn", "current-actor", "earlier-actor", "gateway", "subject"])
def test_set_matches_each_kind(kind: RevocationKind, value: str) -> None:
    revs = RevocationSet([entry(kind, value)])
    assert revs.is_revoked(CLAIMS)
    assert revs.is_revoked(TokenFacts.of(CLAIMS))
    assert not RevocationSet([entry(kind, value + "x")]).is_revoked(CLAIMS)


def test_set_covers_credentials_issued_up_to_the_revocation() -> None:
    revs = RevocationSet([entry(RevocationKind.agent, "spiffe://td/agents/b", at=1000.0)])
    assert revs.is_revoked({**CLAIMS, "iat": 1000 + int(ISSUED_AFTER_GRACE_S)})
    assert not revs.is_revoked({**CLAIMS, "iat": 1000 + int(ISSUED_AFTER_GRACE_S) + 1})
    assert revs.is_revoked({**CLAIMS, "iat": None})  # no iat: fail closed
    # jti and txn cover their token whenever it was issued
    later = {**CLAIMS, "iat": 5000}
    assert RevocationSet([entry(RevocationKind.txn, "t1")]).is_revoked(later)
    assert RevocationSet([entry(RevocationKind.jti, "j1")]).is_revoked(later)


def test_set_takes_verified_claims_and_swaps_whole() -> None:
    claims = TxnTokenClaims.from_claims({
        "iss": ISSUER, "aud": TRUST_DOMAIN, "sub": DEV_AGENT, "jti": "j9", "txn": "t9",
        "iat": 100, "exp": 400, "act": {"sub": DEV_AGENT},
    })
    revs = RevocationSet()
    assert not revs.is_revoked(claims)
    revs.add(entry(RevocationKind.agent, DEV_AGENT, at=100))
    assert revs.is_revoked(claims) and len(revs) == 1
    revs.replace([])
    assert not revs.is_revoked(claims)


# --- fixtures over the app -------------------------------------------------------------


@pytest.fixture
def rs_client(client: TestClient, engine: Engine, clock: FrozenClock) -> TestClient:
    """The dev world plus a resource server for the trust domain, a second gateway and a
    resource server for another audience."""
    from broker.auth.resource_servers import ResourceServerCreate, create_resource_server

    with Session(engine) as s:
        create_resource_server(s, ResourceServerCreate(client_id=RS, audiences=[TRUST_DOMAIN]),
                               now=clock())
        create_resource_server(s, ResourceServerCreate(
            client_id=RS_OTHER, audiences=["https://tool.example"]), now=clock())
        store.create_gateway(s, GatewayCreate(
            client_id=OTHER_GW, agent_namespaces=["spiffe://dev.writ.local/agents/**"]),
            now=clock())
        s.commit()
    client.app.state.broker.snapshots.refresh()  # type: ignore[attr-defined]
    return client


def mint(client: TestClient, td: DevTrustDomain, now: float, **overrides: Any) -> str:
    r = post_token(client, token_params(td, now, **overrides))
    assert r.status_code == 200, r.text
    token: str = r.json()["access_token"]
    return token


def introspect(client: TestClient, td: DevTrustDomain, token: str, *, caller: str = RS,
               now: float = T0) -> httpx.Response:
    svid = td.mint_svid(caller, ISSUER, now=now)
    return client.post("/introspect", content=form(token=token),
                       headers={**FORM, "Authorization": f"Bearer {svid}"})


def active(client: TestClient, td: DevTrustDomain, token: str, now: float) -> bool:
    r = introspect(client, td, token, now=now)
    assert r.status_code == 200, r.text
    value: bool = r.json()["active"]
    return value


def revoke(client: TestClient, td: DevTrustDomain, token: str, now: float,
           gateway: str = DEV_GATEWAY, **extra: str) -> httpx.Response:
    return client.post("/revoke", content=form(
        token=token, client_assertion_type=JWT_SPIFFE,
        client_assertion=td.mint_svid(gateway, ISSUER, now=now), **extra), headers=FORM)


def audit(engine: Engine) -> list[AuditRecord]:
    with Session(engine) as s:
        return list(s.exec(select(AuditRecord).order_by(AuditRecord.seq)).scalars())


# --- /introspect -----------------------------------------------------------------------


def test_introspect_active_token_exact_wire(rs_client: TestClient, seeded: DevTrustDomain,
                                           clock: FrozenClock) -> None:
    token = mint(rs_client, seeded, clock())
    r = introspect(rs_client, seeded, token)
    assert r.status_code == 200
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    claims = claims_of(token)
    assert body == {"active": True, **claims, "client_id": DEV_GATEWAY}
    assert body["aud"] == TRUST_DOMAIN and body["exp"] == int(T0) + 300


def test_introspect_refuses_unauthenticated_callers(rs_client: TestClient,
                                                    seeded: DevTrustDomain) -> None:
    token = mint(rs_client, seeded, T0)
    r = rs_client.post("/introspect", content=form(token=token), headers=FORM)
    assert r.status_code == 401
    assert r.json() == {"error": "invalid_client",
                        "error_description": "client authentication is required"}
    r = rs_client.post("/introspect", content=form(token=token),
                       headers={**FORM, "Authorization": "Basic cnM6c2VjcmV0"})
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Basic realm="writ", error="invalid_client"'
    # a registered gateway is not a resource server
    r = introspect(rs_client, seeded, token, caller=DEV_GATEWAY)
    assert r.status_code == 401
    # RFC 7662 §2.3: a bearer credential that fails is invalid_token, as its challenge says
    assert r.json()["error"] == "invalid_token"
    assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    # an SVID for another audience
    svid = seeded.mint_svid(RS, "https://elsewhere.example", now=T0)
    r = rs_client.post("/introspect", content=form(token=token),
                       headers={**FORM, "Authorization": f"Bearer {svid}"})
    assert r.status_code == 401
    # the token parameter is required
    r = rs_client.post("/introspect", content=form(token_type_hint="access_token"),
                       headers={**FORM, "Authorization":
                                f"Bearer {seeded.mint_svid(RS, ISSUER, now=T0)}"})
    assert r.status_code == 400
    assert r.json() == {"error": "invalid_request", "error_description": "token is required"}


def test_introspect_with_client_assertions(rs_client: TestClient, seeded: DevTrustDomain,
                                           engine: Engine, clock: FrozenClock) -> None:
    from broker.auth.resource_servers import ResourceServerCreate, create_resource_server
    from registry.models import GatewayAuthMethod

    token = mint(rs_client, seeded, T0)
    r = rs_client.post("/introspect", headers=FORM, content=form(
        token=token, client_assertion_type=JWT_SPIFFE,
        client_assertion=seeded.mint_svid(RS, ISSUER, now=T0)))
    assert r.status_code == 200 and r.json()["active"] is True

    key = ECKey.generate_key("P-256", private=True)
    pkj = "spiffe://dev.writ.local/services/pkj"
    with Session(engine) as s:
        create_resource_server(s, ResourceServerCreate(
            client_id=pkj, auth_method=GatewayAuthMethod.private_key_jwt,
            audiences=[TRUST_DOMAIN],
            jwks={"keys": [{**key.as_dict(private=False), "kid": "k1"}]}), now=clock())
        s.commit()
    rs_client.app.state.broker.snapshots.refresh()  # type: ignore[attr-defined]

    def assertion(aud: str, jti: str) -> str:
        return jwt.encode({"alg": "ES256", "kid": "k1"},
                          {"iss": pkj, "sub": pkj, "aud": aud, "jti": jti,
                           "iat": int(T0), "exp": int(T0) + 60}, key, algorithms=["ES256"])

    def ask(a: str) -> httpx.Response:
        return rs_client.post("/introspect", headers=FORM, content=form(
            token=token, client_assertion_type=JWT_BEARER, client_assertion=a))

    r = ask(assertion(f"{ISSUER}/introspect", "a1"))
    assert r.status_code == 200 and r.json()["active"] is True
    assert ask(assertion(f"{ISSUER}/introspect", "a1")).status_code == 401  # replayed
    assert ask(assertion(f"{ISSUER}/token-other", "a2")).status_code == 401


def test_token_for_another_audience_is_not_active_for_the_caller(
    rs_client: TestClient, seeded: DevTrustDomain
) -> None:
    token = mint(rs_client, seeded, T0)
    r = introspect(rs_client, seeded, token, caller=RS_OTHER)
    assert r.status_code == 200
    assert r.json() == {"active": False}


def test_expired_unknown_and_malformed_tokens_are_not_active(
    rs_client: TestClient, seeded: DevTrustDomain, clock: FrozenClock
) -> None:
    token = mint(rs_client, seeded, T0)
    assert active(rs_client, seeded, token, clock())
    stranger = ECKey.generate_key("P-256", private=True)
    forged = jwt.encode({"alg": "ES256", "kid": "not-writs", "typ": "txntoken+jwt"},
                        claims_of(token), stranger, algorithms=["ES256"])
    for bad in (forged, "not-a-jwt", token[:-4] + "AAAA", token + "x" * 9000):
        assert active(rs_client, seeded, bad, clock()) is False
    clock.advance(300)
    assert active(rs_client, seeded, token, clock()) is False  # exp reached: no leeway


def test_a_retired_key_ends_its_tokens_at_once(rs_client: TestClient, seeded: DevTrustDomain,
                                              clock: FrozenClock) -> None:
    broker = rs_client.app.state.broker  # type: ignore[attr-defined]
    before = mint(rs_client, seeded, clock())
    clock.advance(10)
    old_kid = broker.keyring.signer().kid
    broker.keyring.rotate(force=True)
    assert old_kid in broker.keyring.retired()
    after = mint(rs_client, seeded, clock())
    assert active(rs_client, seeded, before, clock()) is False
    assert active(rs_client, seeded, after, clock()) is True
    # still published, so offline verifiers accept the old token until it expires
    keys = StaticKeys(broker.keyring.jwks())
    TxnTokenVerifier(keys, issuer=ISSUER, audience=TRUST_DOMAIN, clock=clock).verify(before)


# --- /revoke (RFC 7009) ----------------------------------------------------------------


def test_gateway_revokes_its_own_token(rs_client: TestClient, seeded: DevTrustDomain,
                                       clock: FrozenClock, engine: Engine) -> None:
    token = mint(rs_client, seeded, T0)
    other = mint(rs_client, seeded, T0)
    r = revoke(rs_client, seeded, token, T0, token_type_hint="access_token")
    assert r.status_code == 200
    assert r.content == b""
    assert r.headers["cache-control"] == "no-store"
    assert active(rs_client, seeded, token, T0) is False
    assert active(rs_client, seeded, other, T0) is True  # one jti only
    assert revoke(rs_client, seeded, token, T0).status_code == 200  # idempotent
    rows = [r for r in audit(engine) if r.kind == "revocation"]
    assert [(r.decision, r.reason) for r in rows] == [
        ("changed", "revoked.jti"), ("ignored", "already_revoked")]
    assert rows[0].jti == claims_of(token)["jti"] and rows[0].gateway == DEV_GATEWAY
    assert rows[0].txn == claims_of(token)["txn"]
    assert verify_chain(engine).ok


def test_revoke_ignores_invalid_and_expired_tokens(rs_client: TestClient,
                                                   seeded: DevTrustDomain,
                                                   clock: FrozenClock, engine: Engine) -> None:
    token = mint(rs_client, seeded, T0)
    # RFC 7009 §2.2: invalid tokens do not cause an error
    assert revoke(rs_client, seeded, "garbage", T0).status_code == 200
    clock.advance(400)
    assert revoke(rs_client, seeded, token, clock()).status_code == 200
    with Session(engine) as s:
        assert s.exec(select(Revocation)).first() is None
    reasons = [r.reason for r in audit(engine) if r.kind == "revocation"]
    assert reasons == ["token_malformed", "token_expired"]


def test_a_gateway_may_revoke_only_its_own_tokens(rs_client: TestClient,
                                                  seeded: DevTrustDomain) -> None:
    token = mint(rs_client, seeded, T0)
    r = revoke(rs_client, seeded, token, T0, gateway=OTHER_GW)
    assert r.status_code == 400
    assert r.json() == {"error": "unauthorized_client",
                        "error_description": "the token was not issued to this client"}
    assert active(rs_client, seeded, token, T0) is True


def test_revoke_needs_client_authentication(rs_client: TestClient,
                                            seeded: DevTrustDomain) -> None:
    token = mint(rs_client, seeded, T0)
    r = rs_client.post("/revoke", content=form(token=token), headers=FORM)
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    r = rs_client.post("/revoke", content=form(
        client_assertion_type=JWT_SPIFFE,
        client_assertion=seeded.mint_svid(DEV_GATEWAY, ISSUER, now=T0)), headers=FORM)
    assert r.status_code == 400
    assert r.json() == {"error": "invalid_request", "error_description": "token is required"}
    r = rs_client.post("/revoke", content="token=x", headers={"Content-Type": "text/plain"})
    assert r.status_code == 400


# --- admin revocation and the kill switch ----------------------------------------------


def admin_revoke(client: TestClient, token: str, kind: str, value: str,
                 **extra: Any) -> httpx.Response:
    return client.post("/v1/revocations", headers=bearer(token),
                       json={"kind": kind, "value": value, **extra})


def test_kill_switch_on_an_agent(rs_client: TestClient, seeded: DevTrustDomain,
                                 clock: FrozenClock, root: str, engine: Engine) -> None:  # noqa: F811
    token = mint(rs_client, seeded, T0)
    r = admin_revoke(rs_client, root, "agent", DEV_AGENT, reason="compromised")
    assert r.status_code == 201
    body = r.json()
    assert body["suspended"] == DEV_AGENT
    assert body["revocation"]["kind"] == "agent" and body["revocation"]["value"] == DEV_AGENT
    assert body["revocation"]["reason"] == "compromised"
    # every outstanding token inactive, every new request refused
    assert active(rs_client, seeded, token, T0) is False
    r = post_token(rs_client, token_params(seeded, T0))
    assert r.status_code == 400
    assert r.json()["error"] == "access_denied"
    # resumed later: new tokens work, the old one stays revoked
    clock.advance(ISSUED_AFTER_GRACE_S + 1)
    assert rs_client.post(f"/v1/agents/{DEV_AGENT}/resume", headers=bearer(root)).status_code == 200
    fresh = mint(rs_client, seeded, clock())
    assert active(rs_client, seeded, fresh, clock()) is True
    assert active(rs_client, seeded, token, clock()) is False
    rows = [r for r in audit(engine) if r.reason == "revoked.agent"]
    assert len(rows) == 1 and rows[0].agent == DEV_AGENT
    assert rows[0].detail["suspended"] is True and rows[0].detail["note"] == "compromised"


def test_suspension_alone_makes_tokens_inactive_until_resumed(
    rs_client: TestClient, seeded: DevTrustDomain, root: str  # noqa: F811
) -> None:
    token = mint(rs_client, seeded, T0)
    agent = f"/v1/agents/{DEV_AGENT}"
    assert rs_client.post(f"{agent}/suspend", headers=bearer(root)).status_code == 200
    assert active(rs_client, seeded, token, T0) is False
    assert rs_client.post(f"{agent}/resume", headers=bearer(root)).status_code == 200
    assert active(rs_client, seeded, token, T0) is True
    assert rs_client.post(f"/v1/gateways/{DEV_GATEWAY}/suspend",
                          headers=bearer(root)).status_code == 200
    assert active(rs_client, seeded, token, T0) is False


@pytest.mark.parametrize("kind", ["jti", "txn", "gateway", "subject"])
def test_admin_revocation_by_kind(kind: str, rs_client: TestClient, seeded: DevTrustDomain,
                                  clock: FrozenClock, root: str) -> None:  # noqa: F811
    token = mint(rs_client, seeded, T0)
    claims = claims_of(token)
    value = {"jti": claims["jti"], "txn": claims["txn"], "gateway": DEV_GATEWAY,
             "subject": claims["sub"]}[kind]
    r = admin_revoke(rs_client, root, kind, value)
    assert r.status_code == 201, r.text
    assert r.json()["suspended"] == (DEV_GATEWAY if kind == "gateway" else None)
    assert active(rs_client, seeded, token, T0) is False
    if kind == "gateway":
        assert post_token(rs_client, token_params(seeded, T0)).status_code == 401
        return
    clock.advance(ISSUED_AFTER_GRACE_S + 1)
    assert active(rs_client, seeded, mint(rs_client, seeded, clock()), clock()) is True


def test_revocation_without_suspension(rs_client: TestClient, seeded: DevTrustDomain,
                                       clock: FrozenClock, root: str) -> None:  # noqa: F811
    token = mint(rs_client, seeded, T0)
    r = admin_revoke(rs_client, root, "agent", DEV_AGENT, suspend=False)
    assert r.json()["suspended"] is None
    assert active(rs_client, seeded, token, T0) is False
    clock.advance(ISSUED_AFTER_GRACE_S + 1)
    assert post_token(rs_client, token_params(seeded, clock())).status_code == 200


def test_admin_revocation_refusals(rs_client: TestClient, issue: Any) -> None:  # noqa: F811
    reader = issue("revocations:read")
    r = admin_revoke(rs_client, reader, "jti", "x")
    assert r.status_code == 403
    assert r.json()["error"] == "insufficient_scope"
    bound = issue("revocations:write", namespaces=("spiffe://dev.writ.local/agents/team-a/**",))
    assert admin_revoke(rs_client, bound, "jti", "x").status_code == 403
    assert admin_revoke(rs_client, bound, "agent", DEV_AGENT).status_code == 403
    r = admin_revoke(rs_client, bound, "agent", "spiffe://dev.writ.local/agents/team-a/x")
    assert r.status_code == 201
    writer = issue("revocations:write")
    r = admin_revoke(rs_client, writer, "agent", "not a spiffe id")
    assert r.status_code == 422
    r = admin_revoke(rs_client, writer, "colour", "x")
    assert r.status_code == 422
    r = rs_client.get("/v1/revocations", headers=bearer(reader))
    assert r.status_code == 200
    assert [e["value"] for e in r.json()] == ["spiffe://dev.writ.local/agents/team-a/x"]


def test_revocations_survive_a_restart(settings: Settings, engine: Engine,
                                       seeded: DevTrustDomain, clock: FrozenClock,
                                       root: str) -> None:  # noqa: F811
    from broker.auth.resource_servers import ResourceServerCreate, create_resource_server

    with Session(engine) as s:
        create_resource_server(s, ResourceServerCreate(client_id=RS, audiences=[TRUST_DOMAIN]),
                               now=clock())
        s.commit()
    with TestClient(create_app(settings, engine=engine, clock=clock), base_url=ISSUER) as c:
        token = mint(c, seeded, T0)
        assert admin_revoke(c, root, "txn", claims_of(token)["txn"]).status_code == 201
    with TestClient(create_app(settings, engine=engine, clock=clock), base_url=ISSUER) as c:
        assert active(c, seeded, token, T0) is False


def test_prune_drops_entries_once_their_tokens_expired(rs_client: TestClient,
                                                       seeded: DevTrustDomain,
                                                       clock: FrozenClock, engine: Engine,
                                                       root: str) -> None:  # noqa: F811
    token = mint(rs_client, seeded, T0)
    revoke(rs_client, seeded, token, T0)
    admin_revoke(rs_client, root, "subject", "user-7")
    service = rs_client.app.state.revocation  # type: ignore[attr-defined]
    assert service.prune() == {"revocations": 0, "keys": []}
    clock.advance(300 + 61)  # the jti entry lasts until its token's exp + leeway
    assert service.prune()["revocations"] == 1
    clock.advance(3600)  # the subject entry covers anything issued before it
    assert service.prune()["revocations"] == 1
    with Session(engine) as s:
        assert s.exec(select(Revocation)).first() is None
    assert [r.detail["count"] for r in audit(engine) if r.reason == "revocations.pruned"] == [1, 1]


# --- the jwks verifier's online check against /introspect ------------------------------


def bridge(client: TestClient) -> httpx.Client:
    """An httpx client whose transport is the app under test."""

    def handler(request: httpx.Request) -> httpx.Response:
        r = client.request(request.method, request.url.path, content=request.content,
                           headers=dict(request.headers))
        return httpx.Response(r.status_code, headers=dict(r.headers), content=r.content)

    return httpx.Client(transport=httpx.MockTransport(handler))


def test_introspection_check_of_the_jwks_verifier(rs_client: TestClient,
                                                   seeded: DevTrustDomain,
                                                   clock: FrozenClock) -> None:
    broker = rs_client.app.state.broker  # type: ignore[attr-defined]
    check = IntrospectionCheck(
        f"{ISSUER}/introspect", auth=BearerSvid(lambda: seeded.mint_svid(RS, ISSUER, now=T0)),
        http=bridge(rs_client), cache_ttl_s=0, clock=clock,
    )
    verifier = TxnTokenVerifier(StaticKeys(broker.keyring.jwks()), issuer=ISSUER,
                                audience=TRUST_DOMAIN, introspection=check, clock=clock)
    token = mint(rs_client, seeded, T0)
    assert verifier.verify(token).subject == DEV_AGENT
    assert revoke(rs_client, seeded, token, T0).status_code == 200
    with pytest.raises(TokenInactive):
        verifier.verify(token)
