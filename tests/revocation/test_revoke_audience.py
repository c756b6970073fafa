"""``/revoke`` takes a ``private_key_jwt`` assertion whose ``aud`` is ``<issuer>/revoke``
(RFC 7523 §3: the audience identifies the server or its endpoint), as ``/introspect`` does
for its URL, and one replay set spans every endpoint."""

from __future__ import annotations

import uuid
from urllib.parse import urlencode

import httpx
import pytest
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import ECKey
from sqlalchemy import Engine, select
from sqlmodel import Session

from broker.cli.dev import DEV_AGENT, DevTrustDomain
from broker.revocation.store import Revocation
from registry import store
from registry.models import GatewayAuthMethod, GatewayCreate
from tests.conftest import ISSUER, T0, FrozenClock
from tests.revocation_kit import FORM, claims_of

GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
PKJ = "spiffe://dev.writ.local/gateway/pkj"


@pytest.fixture
def key(client: TestClient, engine: Engine, clock: FrozenClock) -> ECKey:
    key = ECKey.generate_key("P-256", private=True)
    with Session(engine) as s:
        store.create_gateway(s, GatewayCreate(
            client_id=PKJ, auth_method=GatewayAuthMethod.private_key_jwt,
            agent_namespaces=["spiffe://dev.writ.local/agents/**"],
            jwks={"keys": [{**key.as_dict(private=False), "kid": "k1"}]}), now=clock())
        s.commit()
    client.app.state.broker.snapshots.refresh()  # type: ignore[attr-defined]
    return key


def assertion(key: ECKey, aud: str, jti: str | None = None) -> str:
    return jwt.encode({"alg": "ES256", "kid": "k1"},
                      {"iss": PKJ, "sub": PKJ, "aud": aud, "jti": jti or uuid.uuid4().hex,
                       "iat": int(T0), "exp": int(T0) + 60}, key, algorithms=["ES256"])


def mint(client: TestClient, td: DevTrustDomain, client_assertion: str) -> httpx.Response:
    return client.post("/token", headers=FORM, content=urlencode({
        "grant_type": GRANT, "client_assertion_type": JWT_BEARER,
        "client_assertion": client_assertion,
        "subject_token": td.mint_svid(DEV_AGENT, ISSUER, now=T0),
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "requested_token_type": "urn:ietf:params:oauth:token-type:txn_token",
        "audience": "dev.writ.local", "scope": "demo.read"}))


def revoke(client: TestClient, token: str, client_assertion: str) -> httpx.Response:
    return client.post("/revoke", headers=FORM, content=urlencode({
        "token": token, "client_assertion_type": JWT_BEARER,
        "client_assertion": client_assertion}))


def revoked_jtis(engine: Engine) -> list[str]:
    with Session(engine) as s:
        return [r.value for r in s.exec(select(Revocation)).scalars()]


def test_revoke_accepts_its_own_url_as_audience(client: TestClient, seeded: DevTrustDomain,
                                                 key: ECKey, engine: Engine) -> None:
    r = mint(client, seeded, assertion(key, f"{ISSUER}/token"))
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    r = revoke(client, token, assertion(key, f"{ISSUER}/revoke"))
    assert r.status_code == 200, r.text
    assert revoked_jtis(engine) == [claims_of(token)["jti"]]


@pytest.mark.parametrize("aud", [f"{ISSUER}/token", f"{ISSUER}/introspect", f"{ISSUER}/revoke/x"])
def test_revoke_refuses_another_endpoints_audience(aud: str, client: TestClient,
                                                   seeded: DevTrustDomain, key: ECKey,
                                                   engine: Engine) -> None:
    token = mint(client, seeded, assertion(key, ISSUER)).json()["access_token"]
    r = revoke(client, token, assertion(key, aud))
    assert r.status_code == 401
    assert r.json()["error"] == "invalid_client"
    assert revoked_jtis(engine) == []


def test_an_assertion_is_used_once_across_endpoints(client: TestClient, seeded: DevTrustDomain,
                                                    key: ECKey, engine: Engine) -> None:
    once = assertion(key, ISSUER)
    token = mint(client, seeded, once).json()["access_token"]
    r = revoke(client, token, once)  # RFC 7523 §3 item 7: the same jti again
    assert r.status_code == 401
    assert revoked_jtis(engine) == []
    assert revoke(client, token, assertion(key, ISSUER)).status_code == 200
