"""Profiles "on-behalf-of" and "OBO access token for a tool": exact claims and wire bodies,
the trusted issuer's keys (OIDC discovery, cache, refetch on an unknown kid), and every
refusal of tests/vectors/obo_refusals.json with its exact error and audited reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest
from joserfc.jwk import ECKey
from sqlalchemy import Engine
from sqlmodel import Session

from broker.cli.dev import DEV_GATEWAY, DevTrustDomain
from jwks import AT_JWT_TYP, StaticKeys, TxnTokenVerifier
from jwks.claims import TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_TXN_TOKEN
from registry.issuers import delete_issuer
from tests.conftest import ISSUER, FrozenClock
from tests.forge import forge, forge_raw, mutated_svid, raw_json
from tests.idp import TestIssuer
from tests.world import (
    ALICE,
    IDP,
    MAIL_AUDIENCE,
    MAIL_TOOL,
    MAILER,
    PLANNER,
    TD,
    TXN_TOOL,
    World,
    decode,
    token_rows,
)

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "obo_refusals.json").read_text())


def test_txn_token_on_behalf_of_user_exact(world: World, clock: FrozenClock,
                                           engine: Engine) -> None:
    now = clock()
    user = world.idp.mint("alice", now=now, scope="mail.read mail.send openid")
    r = world.post(world.req.on_behalf_of(
        user, PLANNER, now, scope="mail.send",
        request_details={"intent": "mail the itinerary", "act": {"sub": "spiffe://x/forged"}},
        request_context={"environment": "prod"}))
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    token = body.pop("access_token")
    assert body == {"issued_token_type": TOKEN_TYPE_TXN_TOKEN, "token_type": "N_A",
                    "expires_in": 300, "scope": "mail.send"}
    header, claims = decode(token)
    assert header["typ"] == "txntoken+jwt"
    planner = world.broker.snapshot.agents[PLANNER]
    t = int(now)
    assert claims == {
        "iss": ISSUER, "aud": TD, "iat": t, "exp": t + 300,
        "txn": claims["txn"], "jti": claims["jti"],
        "sub": ALICE,
        "sub_id": {"format": "iss_sub", "iss": IDP, "sub": "alice"},
        "scope": "mail.send",
        "req_wl": DEV_GATEWAY,
        "act": {"sub": PLANNER},
        "tctx": {"purpose": "plans the user's errands"},
        "rctx": {"gateway_ip": "testclient", "gateway_ip_source": "peer",
                 "env": "prod"},
        "agentic_ctx": {
            "current_actor": PLANNER,
            "originator": PLANNER,
            "prov": {"manifest_hash": planner.charter_hash},
            "identity": {"workload_id": PLANNER},
            "chain_metadata": {"hop_count": 1, "txn_path": [PLANNER]},
        },
    }
    verified = TxnTokenVerifier(StaticKeys(world.jwks()), issuer=ISSUER, audience=TD,
                                clock=clock).verify(token)
    assert (verified.subject, verified.actor, verified.actor_chain) == (ALICE, PLANNER, ())
    rec = token_rows(engine)[-1]
    assert (rec.decision, rec.subject, rec.agent, rec.scope) == ("issued", ALICE, PLANNER,
                                                                 "mail.send")
    assert rec.detail["profile"] == "on_behalf_of"
    assert rec.detail["user_issuer"] == IDP
    assert user not in json.dumps(rec.detail)


def test_scope_defaults_to_user_and_charter_and_exp_to_user_token(world: World,
                                                                  clock: FrozenClock) -> None:
    now = clock()
    user = world.idp.mint("alice", now=now, ttl_s=90, scope="mail.read plan.write other")
    r = world.post(world.req.on_behalf_of(user, PLANNER, now))
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == "mail.read plan.write"  # user ∩ charter
    assert r.json()["expires_in"] == 90  # never past the user token's exp


def test_jwt_subject_token_type_and_scp_array(world: World, clock: FrozenClock) -> None:
    now = clock()
    user = world.idp.mint("bob", now=now, scope=None, scp=["search.query"])
    r = world.post(world.req.on_behalf_of(
        user, PLANNER, now, subject_token_type="urn:ietf:params:oauth:token-type:jwt"))
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == "search.query"
    assert decode(r.json()["access_token"])[1]["sub"] == f"{IDP}#bob"


def test_may_act_naming_the_agent_is_accepted(world: World, clock: FrozenClock) -> None:
    now = clock()
    user = world.idp.mint("alice", now=now, may_act={"sub": PLANNER})
    assert world.post(world.req.on_behalf_of(user, PLANNER, now)).status_code == 200


def test_access_token_for_tool_exact(world: World, clock: FrozenClock, engine: Engine) -> None:
    now = clock()
    user = world.idp.mint("alice", now=now)
    r = world.post(world.req.on_behalf_of(
        user, PLANNER, now, requested_token_type=TOKEN_TYPE_ACCESS_TOKEN, resource=MAIL_TOOL,
        scope="mail.send", request_details={"action": "send"}))
    assert r.status_code == 200, r.text
    body = r.json()
    token = body.pop("access_token")
    # RFC 8693 §2.2.1 response, RFC 6750 bearer; the tool caps the lifetime at 60 s
    assert body == {"issued_token_type": TOKEN_TYPE_ACCESS_TOKEN, "token_type": "Bearer",
                    "expires_in": 60, "scope": "mail.send",
                    "tool_endpoint": "https://mail.example.com/api"}
    header, claims = decode(token)
    assert header == {"alg": "ES256", "kid": world.broker.keyring.signer().kid, "typ": "at+jwt"}
    t = int(now)
    assert claims == {
        "iss": ISSUER, "exp": t + 60, "aud": MAIL_AUDIENCE, "sub": ALICE,
        "client_id": DEV_GATEWAY, "iat": t, "jti": claims["jti"], "scope": "mail.send",
        "act": {"sub": PLANNER},
        "sub_id": {"format": "iss_sub", "iss": IDP, "sub": "alice"},
    }
    # the tool verifies it with the jwks library ...
    verified = TxnTokenVerifier(StaticKeys(world.jwks()), issuer=ISSUER, audience=MAIL_AUDIENCE,
                                typ=AT_JWT_TYP, clock=clock).verify(token)
    assert (verified.subject, verified.actor) == (ALICE, PLANNER)
    # ... and with PyJWT, an independent JOSE library (RFC 9068 §4)
    key = pyjwt.PyJWK(world.jwks()["keys"][0])
    decoded = pyjwt.decode(token, key=key, algorithms=["ES256"], audience=MAIL_AUDIENCE,
                           issuer=ISSUER, options={"verify_exp": False, "verify_iat": False})
    assert decoded["act"] == {"sub": PLANNER}
    rec = token_rows(engine)[-1]
    assert (rec.tool, rec.txn, rec.detail["aud"]) == (MAIL_TOOL, None, MAIL_AUDIENCE)


def test_access_token_audience_parameter_names_tool(world: World, clock: FrozenClock) -> None:
    now = clock()
    r = world.post(world.req.on_behalf_of(
        world.idp.mint("alice", now=now), MAILER, now,
        requested_token_type=TOKEN_TYPE_ACCESS_TOKEN, audience=MAIL_TOOL,
        request_details={"action": "read"}))
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == "mail.read mail.send"  # user ∩ charter ∩ tool


def test_issuer_keys_discovered_cached_and_refetched_on_unknown_kid(world: World,
                                                                   clock: FrozenClock) -> None:
    idp = world.idp
    assert world.post(world.req.on_behalf_of(idp.mint(now=clock()), PLANNER,
                                             clock())).status_code == 200
    assert world.post(world.req.on_behalf_of(idp.mint(now=clock()), PLANNER,
                                             clock())).status_code == 200
    assert idp.hits == {"/.well-known/openid-configuration": 1, "/keys": 1}
    idp.rotate()  # a new kid: one refetch, after the rate limit
    clock.advance(11)
    r = world.post(world.req.on_behalf_of(idp.mint(now=clock()), PLANNER, clock()))
    assert r.status_code == 200, r.text
    assert idp.hits["/keys"] == 2


def test_removed_issuer_is_refused_at_once(world: World, clock: FrozenClock,
                                           engine: Engine) -> None:
    user = world.idp.mint(now=clock())
    assert world.post(world.req.on_behalf_of(user, PLANNER, clock())).status_code == 200
    with Session(engine) as s:
        delete_issuer(s, IDP)
        s.commit()
    world.refresh()
    r = world.post(world.req.on_behalf_of(user, PLANNER, clock()))
    assert (r.status_code, r.json()["error"]) == (400, "invalid_request")
    assert token_rows(engine)[-1].reason == "subject_token_unknown_issuer"


def test_issuer_keys_unavailable_fails_closed(world: World, clock: FrozenClock,
                                              engine: Engine) -> None:
    world.idp.jwks_down = True
    r = world.post(world.req.on_behalf_of(world.idp.mint(now=clock()), PLANNER, clock()))
    assert r.status_code == 503
    assert r.json() == {"error": "temporarily_unavailable",
                        "error_description": "the user token's issuer keys are unavailable; "
                                             "try again"}
    assert token_rows(engine)[-1].reason == "issuer_keys_unavailable"


def _user_token(idp: TestIssuer, spec: dict[str, Any], now: float) -> str:
    if spec.get("issuer") == "untrusted":
        return TestIssuer("https://evil.test").mint(now=now)
    kwargs: dict[str, Any] = {k: spec[k] for k in ("scope", "audience", "ttl_s") if k in spec}
    kwargs.update(spec.get("claims", {}))
    if "iat_offset" in spec:
        kwargs["iat"] = int(now) + spec["iat_offset"]
    if "payload_json" in spec:  # raw JSON text: $VALID holds the valid members
        valid = idp.claims(spec.get("sub", "alice"), now=now, **kwargs)
        for name in spec.get("drop", ()):
            valid.pop(name, None)
        header = json.dumps({"alg": "ES256", "kid": idp.kid, "typ": "at+jwt"}).encode()
        payload = raw_json(spec["payload_json"].replace("$VALID", json.dumps(valid)[1:-1]), {},
                           spec.get("payload_encoding", "utf-8"))
        assert isinstance(idp.key, ECKey)
        return forge_raw(header, payload, idp.key)
    if "alg" in spec:  # hostile algorithms, forged outside joserfc
        claims = idp.claims(spec.get("sub", "alice"), now=now, **kwargs)
        return forge({"alg": spec["alg"], "kid": idp.kid, "typ": "at+jwt"}, claims,
                     key=idp.key)
    token = idp.mint(spec.get("sub", "alice"), now=now, header=spec.get("header"),
                     drop=tuple(spec.get("drop", ())),
                     drop_header=tuple(spec.get("drop_header", ())), **kwargs)
    if spec.get("foreign_key"):  # the right kid, someone else's key
        token = TestIssuer(idp.issuer).mint(spec.get("sub", "alice"), now=now,
                                            header={"kid": idp.kid}, **kwargs)
    if spec.get("tamper"):
        head, _, sig = token.split(".")
        claims = idp.claims("mallory", now=now, **kwargs)
        token = f"{head}.{forge({'alg': 'none'}, claims).split('.')[1]}.{sig}"
    return token


@pytest.mark.parametrize("vector", VECTORS, ids=[v["id"] for v in VECTORS])
def test_refusals(vector: dict[str, Any], world: World, clock: FrozenClock,
                  engine: Engine, seeded: DevTrustDomain) -> None:
    now = clock()
    user = _user_token(world.idp, vector.get("user", {}), now)
    params = world.req.on_behalf_of(user, vector.get("agent", PLANNER), now,
                                    **vector.get("params", {}))
    if "actor" in vector and set(vector["actor"]) <= {"sub", "aud"}:
        params["actor_token"] = seeded.mint_svid(vector["actor"]["sub"],
                                                 vector["actor"].get("aud", ISSUER), now=now)
    elif "actor" in vector:  # a hostile JWT-SVID (tests/forge.py)
        params["actor_token"] = mutated_svid(seeded, PLANNER, ISSUER, now, vector["actor"])
    for name in vector.get("drop_params", []):
        params.pop(name, None)
    r = world.post(params)
    assert r.status_code == vector["status"], r.text
    assert r.headers["cache-control"] == "no-store"
    assert r.json() == {"error": vector["error"], "error_description": vector["description"]}
    rows = token_rows(engine)
    assert [(row.decision, row.reason) for row in rows] == [("denied", vector["reason"])]
    assert rows[0].jti is None and rows[0].txn is None


def test_txn_tool_is_not_an_access_token_target(world: World, clock: FrozenClock) -> None:
    r = world.post(world.req.on_behalf_of(world.idp.mint(now=clock()), PLANNER, clock(),
                                          requested_token_type=TOKEN_TYPE_ACCESS_TOKEN,
                                          resource=TXN_TOOL))
    assert r.json() == {"error": "invalid_target",
                        "error_description": "the tool does not take access tokens from Writ"}
