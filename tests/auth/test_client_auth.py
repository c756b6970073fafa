"""RFC 7523 private_key_jwt for gateways with registered keys, readiness, and failing
closed when the audit store cannot take a record."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import ECKey
from sqlalchemy import Engine, text
from sqlmodel import Session

from broker.cli.dev import DEV_AGENT, DevTrustDomain
from jwks.keys import public_jwk
from registry import store
from registry.models import GatewayAuthMethod, GatewayCreate
from tests.conftest import ISSUER, FrozenClock
from tests.grants.test_token_endpoint import post_token, token_params

GW = "spiffe://dev.writ.local/gateway/pkjwt"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@pytest.fixture
def gw_key(engine: Engine, seeded: DevTrustDomain, clock: FrozenClock) -> ECKey:
    key = ECKey.generate_key("P-256", private=True)
    with Session(engine) as s:
        store.create_gateway(s, GatewayCreate(
            client_id=GW, auth_method=GatewayAuthMethod.private_key_jwt,
            agent_namespaces=["spiffe://dev.writ.local/agents/**"],
            jwks={"keys": [public_jwk(key, alg="ES256")]}), now=clock())
        s.commit()
    return key


def assertion(key: ECKey, now: float, **over: Any) -> str:
    claims = {"iss": GW, "sub": GW, "aud": f"{ISSUER}/token", "jti": uuid.uuid4().hex,
              "iat": int(now), "exp": int(now) + 60}
    claims.update(over)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode({"alg": "ES256", "kid": key.thumbprint()}, claims, key,
                      algorithms=["ES256"])


def pk_params(td: DevTrustDomain, now: float, client_assertion: str) -> dict[str, str]:
    return token_params(td, now, client_assertion_type=JWT_BEARER,
                        client_assertion=client_assertion)


def test_private_key_jwt_issues_and_refuses_replay(client: TestClient, seeded: DevTrustDomain,
                                                   gw_key: ECKey, clock: FrozenClock) -> None:
    client.app.state.broker.snapshots.refresh()
    a = assertion(gw_key, clock())
    r = post_token(client, pk_params(seeded, clock(), a))
    assert r.status_code == 200, r.text
    r = post_token(client, pk_params(seeded, clock(), a))
    assert (r.status_code, r.json()["error"]) == (401, "invalid_client")


@pytest.mark.parametrize("over", [
    {"aud": "https://elsewhere.example/token"},
    {"jti": None},
    {"iss": "spiffe://dev.writ.local/gateway/other"},
    {"exp": (1_900_000_000 - 3600)},
    {"exp": (1_900_000_000 + 7200)},
], ids=["wrong-aud", "no-jti", "iss-not-sub", "expired", "lifetime-too-long"])
def test_private_key_jwt_refusals(over: dict[str, Any], client: TestClient,
                                  seeded: DevTrustDomain, gw_key: ECKey,
                                  clock: FrozenClock) -> None:
    client.app.state.broker.snapshots.refresh()
    r = post_token(client, pk_params(seeded, clock(), assertion(gw_key, clock(), **over)))
    assert (r.status_code, r.json()["error"]) == (401, "invalid_client")


def test_private_key_jwt_other_key_refused(client: TestClient, seeded: DevTrustDomain,
                                           gw_key: ECKey, clock: FrozenClock) -> None:
    client.app.state.broker.snapshots.refresh()
    other = ECKey.generate_key("P-256", private=True)
    forged = jwt.encode({"alg": "ES256", "kid": gw_key.thumbprint()},
                        {"iss": GW, "sub": GW, "aud": ISSUER, "jti": "x",
                         "exp": int(clock()) + 60}, other, algorithms=["ES256"])
    r = post_token(client, pk_params(seeded, clock(), forged))
    assert (r.status_code, r.json()["error"]) == (401, "invalid_client")


def test_jwt_svid_gateway_cannot_use_private_key_jwt(client: TestClient, seeded: DevTrustDomain,
                                                    clock: FrozenClock) -> None:
    svid = seeded.mint_svid("spiffe://dev.writ.local/gateway/demo", ISSUER, now=clock())
    r = post_token(client, pk_params(seeded, clock(), svid))
    assert (r.status_code, r.json()["error"]) == (401, "invalid_client")


def test_readyz_reports_each_check(client: TestClient) -> None:
    r = client.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "checks": {"database": True, "signing_key": True,
                                                      "trust_domain": True}}
    assert client.get("/healthz").json() == {"status": "ok"}


def test_audit_failure_fails_closed(client: TestClient, seeded: DevTrustDomain,
                                    clock: FrozenClock, engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE audit_records"))
    started = time.monotonic()
    r = post_token(client, token_params(seeded, clock()))
    assert r.status_code == 503
    assert r.json() == {"error": "temporarily_unavailable",
                        "error_description": "the audit store is unavailable; try again"}
    assert r.headers["cache-control"] == "no-store"
    assert "access_token" not in r.text
    assert time.monotonic() - started < 10
    # the agent is untouched: once the store is back, tokens flow again
    assert client.app.state.broker.snapshot.agents[DEV_AGENT].status.value == "active"
