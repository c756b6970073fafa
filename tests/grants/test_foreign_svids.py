"""JWT-SVIDs of a second trust domain, minted by an independent JOSE library (PyJWT), are
accepted at ``/token`` when that domain's bundle comes from a loopback bundle endpoint:
``https_spiffe`` (the endpoint's X509-SVID) and ``https_web`` (a CA file of its own).

The partner rotates its keys at the endpoint: a new key is picked up on refresh, and a
token signed with a removed key is refused.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from sqlalchemy import Engine
from sqlmodel import Session

from broker.app import create_app
from broker.cli.dev import DEV_CHARTER, DEV_GATEWAY, DevTrustDomain
from broker.settings import Settings
from registry import store, tool_store
from registry.bounds import NamespaceBoundRule
from registry.models import AgentCreate, BundleSourceKind, GatewayUpdate, TrustDomainCreate
from registry.tools import Risk
from tests.conftest import ISSUER, FrozenClock
from tests.tls import make_pki, make_spiffe_ca, tls_server

PARTNER = "partner.test"
AGENT = f"spiffe://{PARTNER}/agents/demo/planner"
ENDPOINT_ID = f"spiffe://{PARTNER}/spire/server"
GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_SPIFFE = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe"


@dataclass
class Minter:
    """The partner's JWT-SVID signing keys, held and used by PyJWT alone."""

    keys: dict[str, tuple[str, Any]] = field(default_factory=dict)  # kid -> (alg, key)

    def add(self, kid: str, alg: str) -> None:
        key: Any = (ec.generate_private_key(ec.SECP256R1()) if alg.startswith("ES")
                    else rsa.generate_private_key(public_exponent=65537, key_size=2048))
        self.keys[kid] = (alg, key)

    def jwks(self, kids: list[str]) -> list[dict[str, Any]]:
        out = []
        for kid in kids:
            alg, key = self.keys[kid]
            codec = ECAlgorithm if alg.startswith("ES") else RSAAlgorithm
            jwk = codec.to_jwk(key.public_key(), as_dict=True)
            out.append({**jwk, "kid": kid, "use": "jwt-svid"})
        return out

    def svid(self, kid: str, now: float) -> str:
        alg, key = self.keys[kid]
        return jwt.encode({"sub": AGENT, "aud": [ISSUER], "iat": int(now), "exp": int(now) + 300},
                          key, algorithm=alg, headers={"kid": kid, "typ": "JWT"})


class Partner:
    def __init__(self, minter: Minter) -> None:
        self.minter = minter
        self.x509: list[dict[str, Any]] = []
        self.kids: list[str] = []
        self.sequence = 1

    def publish(self, kids: list[str]) -> None:
        self.kids = kids
        self.sequence += 1

    def body(self) -> bytes:
        return json.dumps({"spiffe_sequence": self.sequence, "spiffe_refresh_hint": 300,
                           "keys": self.x509 + self.minter.jwks(self.kids)}).encode()


@pytest.fixture(params=["https_spiffe", "https_web"])
def partner_world(request: pytest.FixtureRequest, settings: Settings, engine: Engine,
                  seeded: DevTrustDomain, clock: FrozenClock,
                  tmp_path: Path) -> Iterator[tuple[TestClient, Partner, DevTrustDomain]]:
    minter = Minter()
    for kid, alg in (("rs", "RS256"), ("es", "ES256"), ("ps", "PS256")):
        minter.add(kid, alg)
    partner = Partner(minter)
    partner.publish(["rs", "es", "ps"])

    def handler(path: str) -> tuple[int, dict[str, str], bytes]:
        return 200, {"Content-Type": "application/json"}, partner.body()

    if request.param == "https_spiffe":
        ca = make_spiffe_ca(PARTNER)
        partner.x509 = [ca.bundle_element()]
        pki = ca.issue(ENDPOINT_ID)
        bootstrap = {"keys": [ca.bundle_element()]}  # the operator's copy: its CA only
        options: dict[str, Any] = {"endpoint_profile": "https_spiffe",
                                   "endpoint_spiffe_id": ENDPOINT_ID, "bundle": bootstrap}
    else:
        pki = make_pki()
        ca_file = tmp_path / "partner-ca.pem"
        ca_file.write_bytes(pki.ca_pem)
        options = {"endpoint_profile": "https_web", "ca_file": str(ca_file)}

    with tls_server(handler, pki) as server:
        with Session(engine) as session:
            store.create_trust_domain(session, TrustDomainCreate(
                name=PARTNER, source=BundleSourceKind.endpoint,
                location=f"{server.url}/bundle", **options), now=clock())
            store.update_gateway(session, DEV_GATEWAY, GatewayUpdate(agent_namespaces=[
                "spiffe://dev.writ.local/agents/**", f"spiffe://{PARTNER}/agents/**"]),
                now=clock())
            store.create_agent(session, AgentCreate(spiffe_id=AGENT, owner="partner",
                                                    charter=DEV_CHARTER), now=clock(), by="test")
            tool_store.put_bound(session, NamespaceBoundRule(
                pattern=f"spiffe://{PARTNER}/agents/**", tags=("demo",), scopes=("*",),
                max_risk=Risk.medium), now=clock(), by="test")
            session.commit()
        app = create_app(settings, engine=engine, clock=clock)
        with TestClient(app, base_url=ISSUER) as client:
            yield client, partner, seeded


def _ask(client: TestClient, gateway: DevTrustDomain, subject_token: str, now: float) -> Any:
    return client.post("/token", headers={"Content-Type": "application/x-www-form-urlencoded"},
                       content=urlencode({
                           "grant_type": GRANT, "client_assertion_type": JWT_SPIFFE,
                           "client_assertion": gateway.mint_svid(DEV_GATEWAY, ISSUER, now=now),
                           "subject_token": subject_token,
                           "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
                           "requested_token_type": "urn:ietf:params:oauth:token-type:txn_token",
                           "audience": "dev.writ.local", "scope": "demo.read"}))


def _sub(response: Any) -> str:
    payload = response.json()["access_token"].split(".")[1]
    return str(json.loads(jwt.utils.base64url_decode(payload))["sub"])


def test_independent_svids_across_a_key_rotation(
    partner_world: tuple[TestClient, Partner, DevTrustDomain], clock: FrozenClock,
) -> None:
    client, partner, gateway = partner_world
    broker = client.app.state.broker  # type: ignore[attr-defined]
    assert broker.bundles.refresh(PARTNER), broker.bundles.status()[PARTNER].last_error
    shown = client.get(f"/v1/trust-domains/{PARTNER}",
                       headers={"Authorization": f"Bearer {_admin(client)}"}).json()
    assert (shown["key_count"], shown["status"]["fresh"], shown["status"]["last_error"]) == (
        3, True, None)

    for kid in ("rs", "es", "ps"):  # RS256, ES256, PS256
        r = _ask(client, gateway, partner.minter.svid(kid, clock()), clock())
        assert r.status_code == 200, (kid, r.text)
        assert _sub(r) == AGENT

    # the partner publishes its next key ahead of use; Writ has not refreshed yet
    partner.minter.add("es-next", "ES256")
    partner.publish(["rs", "es", "ps", "es-next"])
    early = partner.minter.svid("es-next", clock())
    r = _ask(client, gateway, early, clock())
    assert (r.status_code, r.json()["error"]) == (400, "invalid_request")
    assert broker.bundles.refresh(PARTNER)
    r = _ask(client, gateway, partner.minter.svid("es-next", clock()), clock())
    assert r.status_code == 200, r.text

    # the old keys retire: a token they sign, even one accepted before, is refused
    accepted = partner.minter.svid("rs", clock())
    assert _ask(client, gateway, accepted, clock()).status_code == 200
    partner.publish(["es-next"])
    assert broker.bundles.refresh(PARTNER)
    for kid in ("rs", "es", "ps"):
        r = _ask(client, gateway, partner.minter.svid(kid, clock()), clock())
        assert (r.status_code, r.json()["error"]) == (400, "invalid_request"), kid
    r = _ask(client, gateway, accepted, clock())
    assert (r.status_code, r.json()["error"]) == (400, "invalid_request")
    assert _ask(client, gateway, partner.minter.svid("es-next", clock()),
                clock()).status_code == 200


def _admin(client: TestClient) -> str:
    from broker.admin.tokens import ALL_SCOPES, AdminTokenCreate, create_admin_token

    engine = client.app.state.broker.engine  # type: ignore[attr-defined]
    with Session(engine) as session:
        issued = create_admin_token(session, AdminTokenCreate(name="t", scopes=list(ALL_SCOPES)),
                                    now=0.0, by="test")
        session.commit()
    return str(issued.token)
