"""POST /token, profile "autonomous agent": exact wire bodies, headers, claims, and every
refusal from tests/vectors/token_refusals.json, each minting nothing and audited."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlmodel import Session

from broker.audit.writer import AuditRecord
from broker.cli.dev import DEV_AGENT, DEV_GATEWAY, DevTrustDomain
from jwks import JwksClient, StaticKeys, TxnTokenVerifier
from tests.conftest import ISSUER, FrozenClock
from tests.forge import mutated_svid

GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_SPIFFE = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe"
JWT = "urn:ietf:params:oauth:token-type:jwt"
TXN = "urn:ietf:params:oauth:token-type:txn_token"
VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "token_refusals.json").read_text())


def token_params(td: DevTrustDomain, now: float, **overrides: Any) -> dict[str, str]:
    params = {
        "grant_type": GRANT,
        "client_assertion_type": JWT_SPIFFE,
        "client_assertion": td.mint_svid(DEV_GATEWAY, ISSUER, now=now),
        "subject_token": td.mint_svid(DEV_AGENT, ISSUER, now=now),
        "subject_token_type": JWT,
        "requested_token_type": TXN,
        "audience": "dev.writ.local",
        "scope": "demo.read",
    }
    for key, value in overrides.items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = value
    return params


def post_token(
    client: TestClient,
    params: dict[str, str],
    *,
    raw_append: str = "",
    content_type: str = "application/x-www-form-urlencoded",
    headers: dict[str, str] | None = None,
) -> Any:
    return client.post(
        "/token",
        content=urlencode(params) + raw_append,
        headers={"Content-Type": content_type, **(headers or {})},
    )


def audit_rows(engine: Engine) -> list[AuditRecord]:
    with Session(engine) as s:
        return list(s.exec(select(AuditRecord).order_by(AuditRecord.seq)).scalars())


def decode_segment(segment: str) -> dict[str, Any]:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def test_issues_txn_token_exact_wire(
    client: TestClient, seeded: DevTrustDomain, clock: FrozenClock, engine: Engine
) -> None:
    details = {"intent": "summarise inbox", "ttl_s": 120, "act": {"sub": "forged"}}
    context = {"environment": "prod", "client_ip": "203.0.113.7", "req_wl": "forged"}
    r = post_token(
        client,
        token_params(
            seeded,
            clock(),
            request_details=json.dumps(details),
            request_context=json.dumps(context),
        ),
    )
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["pragma"] == "no-cache"
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    token = body.pop("access_token")
    assert body == {
        "issued_token_type": TXN,
        "token_type": "N_A",
        "expires_in": 120,
        "scope": "demo.read",
    }
    assert "refresh_token" not in r.text

    header = decode_segment(token.split(".")[0])
    kid = client.app.state.broker.keyring.signer().kid
    assert header == {"alg": "ES256", "kid": kid, "typ": "txntoken+jwt"}
    claims = decode_segment(token.split(".")[1])
    now = int(clock())
    agent = client.app.state.broker.snapshot.agents[DEV_AGENT]
    assert claims == {
        "iss": ISSUER,
        "aud": "dev.writ.local",
        "iat": now,
        "exp": now + 120,
        "txn": claims["txn"],
        "jti": claims["jti"],
        "sub": DEV_AGENT,
        "scope": "demo.read",
        "req_wl": DEV_GATEWAY,
        "tctx": {"purpose": "demo assistant"},
        "rctx": {"req_ip": "203.0.113.7", "gateway_ip": "testclient", "gateway_ip_source": "peer",
                 "env": "prod"},
        # agents-02 §3.2.2, RFC 8693 §4.1: the agent acts for itself, so no act; §3.6.1:
        # current_actor and originator name it
        "agentic_ctx": {
            "current_actor": DEV_AGENT,
            "originator": DEV_AGENT,
            "prov": {"manifest_hash": agent.charter_hash},
            "identity": {"workload_id": DEV_AGENT},
            "chain_metadata": {"hop_count": 1, "txn_path": [DEV_AGENT]},
        },
    }
    assert len(claims["txn"]) == 32 and claims["txn"] != claims["jti"]

    # a downstream service verifies it with the jwks library (published JWKS)
    jwks_doc = client.get("/.well-known/jwks.json").json()
    verified = TxnTokenVerifier(
        StaticKeys(jwks_doc), issuer=ISSUER, audience="dev.writ.local", clock=clock
    ).verify(token)
    assert (verified.subject, verified.actor, verified.txn) == (DEV_AGENT, DEV_AGENT, claims["txn"])

    rows = audit_rows(engine)
    issued = [r for r in rows if r.kind == "token"]
    assert len(issued) == 1
    rec = issued[0]
    assert (rec.decision, rec.reason, rec.gateway, rec.agent, rec.txn, rec.jti, rec.scope) == (
        "issued",
        "ok",
        DEV_GATEWAY,
        DEV_AGENT,
        claims["txn"],
        claims["jti"],
        "demo.read",
    )
    assert rec.detail["intent"] == "summarise inbox"
    assert token not in json.dumps(rec.detail)


def test_scope_is_required_and_ttl_is_capped(
    client: TestClient, seeded: DevTrustDomain, clock: FrozenClock, engine: Engine
) -> None:
    # draft-ietf-oauth-transaction-tokens-10 §Txn-Token Request: scope is REQUIRED; least
    # privilege: never every charter scope by default
    details = json.dumps({"ttl_s": 86400})
    r = post_token(client, token_params(seeded, clock(), scope=None, request_details=details))
    assert r.status_code == 400
    assert r.json() == {"error": "invalid_request", "error_description": "scope is required"}
    assert [(row.decision, row.reason, row.jti) for row in audit_rows(engine)
            if row.kind == "token"] == [("denied", "scope_missing", None)]
    r = post_token(client, token_params(seeded, clock(), scope="demo.read demo.write",
                                        request_details=details))
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == "demo.read demo.write"
    assert r.json()["expires_in"] == 300  # min(request, charter 300, server 900)


def test_audience_may_be_repeated_with_the_trust_domain(
    client: TestClient, seeded: DevTrustDomain, clock: FrozenClock
) -> None:
    # RFC 8693 §2.1: several audience parameters are allowed; one trust domain is served
    r = post_token(client, token_params(seeded, clock()), raw_append="&audience=dev.writ.local")
    assert r.status_code == 200, r.text
    r = post_token(client, token_params(seeded, clock(), scope=None),
                   raw_append="&scope=demo.read&scope=demo.write")
    assert r.status_code == 400
    assert r.json() == {"error": "invalid_request",
                        "error_description": "parameter 'scope' is repeated"}


def test_svid_cache_is_keyed_by_bytes_and_honours_exp(
    client: TestClient, seeded: DevTrustDomain, clock: FrozenClock
) -> None:
    params = token_params(seeded, clock())
    assert post_token(client, params).status_code == 200
    assert post_token(client, params).status_code == 200  # same SVIDs: served from the cache
    clock.advance(300 + 31)  # past exp + leeway
    r = post_token(client, params)
    assert r.status_code == 401
    assert r.json()["error"] == "invalid_client"


def test_metadata_and_jwks(client: TestClient) -> None:
    meta = client.get("/.well-known/oauth-authorization-server").json()
    assert meta["issuer"] == ISSUER
    assert meta["token_endpoint"] == f"{ISSUER}/token"
    assert meta["grant_types_supported"] == [GRANT]
    assert meta["requested_token_types_supported"] == [
        TXN, "urn:ietf:params:oauth:token-type:access_token"]
    assert meta["subject_token_types_supported"] == [
        JWT, "urn:ietf:params:oauth:token-type:access_token", TXN]
    assert meta["actor_token_types_supported"] == [JWT]
    keys = client.get("/.well-known/jwks.json")
    assert keys.headers["content-type"].startswith("application/jwk-set+json")
    assert all("d" not in k for k in keys.json()["keys"])
    assert JwksClient  # the downstream client is exercised end to end in test_e2e


@pytest.mark.parametrize("vector", VECTORS, ids=[v["id"] for v in VECTORS])
def test_refusals(
    vector: dict[str, Any],
    client: TestClient,
    seeded: DevTrustDomain,
    clock: FrozenClock,
    engine: Engine,
) -> None:
    now = clock()
    overrides = dict(vector.get("params", {}))
    if "client" in vector:
        overrides["client_assertion"] = mutated_svid(
            seeded, DEV_GATEWAY, ISSUER, now, vector["client"]
        )
    if "subject" in vector:
        overrides["subject_token"] = mutated_svid(seeded, DEV_AGENT, ISSUER, now, vector["subject"])
    r = post_token(
        client,
        token_params(seeded, now, **overrides),
        raw_append=vector.get("raw_append", ""),
        content_type=vector.get("content_type", "application/x-www-form-urlencoded"),
        headers=vector.get("headers"),
    )
    assert r.status_code == vector["status"], r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert set(body) == {"error", "error_description"}
    assert body["error"] == vector["error"]
    assert "eyJ" not in body["error_description"]
    if r.status_code == 401:  # RFC 9110 §15.5.2: a challenge, naming the body's error
        assert f'error="{body["error"]}"' in r.headers["www-authenticate"]
    rows = [row for row in audit_rows(engine) if row.kind == "token"]
    assert [(row.decision, row.reason) for row in rows] == [("denied", vector["reason"])]
    assert rows[0].jti is None and rows[0].txn is None  # nothing was minted
    # the process keeps serving
    assert post_token(client, token_params(seeded, now)).status_code == 200


def test_oversized_body_is_refused(
    client: TestClient, seeded: DevTrustDomain, clock: FrozenClock
) -> None:
    r = post_token(client, token_params(seeded, clock(), request_details="x" * 70_000))
    assert r.status_code == 413
    assert r.json()["error"] == "invalid_request"


def test_suspended_gateway_and_agent(
    client: TestClient, seeded: DevTrustDomain, clock: FrozenClock, engine: Engine
) -> None:
    from registry import store
    from registry.models import Status

    broker = client.app.state.broker
    with Session(engine) as s:
        store.set_agent_status(s, DEV_AGENT, Status.suspended, now=clock())
        s.commit()
    broker.snapshots.refresh()
    r = post_token(client, token_params(seeded, clock()))
    assert (r.status_code, r.json()["error"]) == (400, "access_denied")
    with Session(engine) as s:
        store.set_gateway_status(s, DEV_GATEWAY, Status.suspended, now=clock())
        s.commit()
    broker.snapshots.refresh()
    r = post_token(client, token_params(seeded, clock()))
    assert (r.status_code, r.json()["error"]) == (401, "invalid_client")


def test_bundle_change_clears_svid_cache(
    client: TestClient, seeded: DevTrustDomain, clock: FrozenClock, engine: Engine
) -> None:
    from registry import store
    from registry.models import TrustDomainUpdate

    params = token_params(seeded, clock())
    assert post_token(client, params).status_code == 200
    with Session(engine) as s:
        store.update_trust_domain(
            s, "dev.writ.local", TrustDomainUpdate(bundle={"keys": []}), now=clock()
        )
        s.commit()
    client.app.state.broker.snapshots.refresh()
    # an empty bundle rejects every SVID of the domain, cached or not
    r = post_token(client, params)
    assert (r.status_code, r.json()["error"]) == (401, "invalid_client")


def test_too_many_headers_refused(client: TestClient, seeded: DevTrustDomain,
                                  clock: FrozenClock) -> None:
    headers = {f"X-Filler-{i}": "x" for i in range(70)}
    r = post_token(client, token_params(seeded, clock()), headers=headers)
    assert r.status_code == 431
    assert r.headers["cache-control"] == "no-store"
    assert r.json() == {"error": "invalid_request", "error_description": "too many headers"}


def test_authorization_header_gets_www_authenticate(client: TestClient, seeded: DevTrustDomain,
                                                    clock: FrozenClock) -> None:
    params = token_params(seeded, clock(), client_assertion=None, client_assertion_type=None)
    r = post_token(client, params, headers={"Authorization": "Basic Z3c6c2VjcmV0"})
    assert r.status_code == 401
    # RFC 6749 §5.2: the scheme the client used; RFC 7617 §2: Basic names a realm
    assert r.headers["www-authenticate"] == 'Basic realm="writ", error="invalid_client"'


def test_gateway_token_types_deny_by_default(client: TestClient, seeded: DevTrustDomain,
                                             clock: FrozenClock, engine: Engine) -> None:
    from registry import store
    from registry.models import GatewayUpdate

    with Session(engine) as s:
        store.update_gateway(s, DEV_GATEWAY, GatewayUpdate(token_types=[]), now=clock())
        s.commit()
    client.app.state.broker.snapshots.refresh()
    r = post_token(client, token_params(seeded, clock()))
    assert (r.status_code, r.json()["error"]) == (400, "unauthorized_client")
