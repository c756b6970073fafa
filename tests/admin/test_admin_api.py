"""The admin API under /v1: exact bodies and headers of every route, RFC 6750 refusals,
namespace-bound registrars, validation, and the effect of a write on POST /token."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from unittest.mock import ANY

import pytest
from fastapi.testclient import TestClient
from joserfc.jwk import ECKey
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from broker.admin.tokens import ALL_SCOPES, PREFIX, AdminTokenCreate, create_admin_token
from broker.audit.writer import AuditRecord
from broker.cli.dev import DEV_AGENT, DEV_GATEWAY, DevTrustDomain
from jwks.claims import TOKEN_TYPE_TXN_TOKEN as TXN_TOKEN_TYPE
from registry.charter import Charter, charter_hash
from tests.conftest import ISSUER, T0, FrozenClock

AGENT = "spiffe://dev.writ.local/agents/travel/booker"
GATEWAY = "spiffe://dev.writ.local/gateway/travel"
CHARTER = {"purpose": "books travel", "scopes": ["travel.book"], "max_ttl_s": 120}
FULL_CHARTER = {**CHARTER, "tools": [], "environments": [], "delegate_to": [],
                "approval_required": [], "acts_for": []}
TEAM_A = "spiffe://dev.writ.local/agents/team-a/**"

Issue = Callable[..., str]


def token_id(token: str) -> str:
    return token[len(PREFIX):].split("_", 1)[0]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def issue(engine: Engine, clock: FrozenClock) -> Issue:
    """Create an admin token straight in the database; return its secret."""

    def make(*scopes: str, namespaces: tuple[str, ...] = (), expires_at: float | None = None,
             name: str = "test") -> str:
        with Session(engine) as session:
            issued = create_admin_token(session, AdminTokenCreate(
                name=name, scopes=list(scopes or ALL_SCOPES), namespaces=list(namespaces),
                expires_at=expires_at), now=clock(), by="test")
            session.commit()
        return issued.token

    return make


@pytest.fixture
def root(issue: Issue) -> str:
    return issue(*sorted(ALL_SCOPES), name="root")


def admin_rows(engine: Engine) -> list[AuditRecord]:
    with Session(engine) as session:
        stmt = select(AuditRecord).where(col(AuditRecord.kind) == "admin")
        return list(session.exec(stmt.order_by(col(AuditRecord.seq))))


def token_form(td: DevTrustDomain, now: float) -> dict[str, str]:
    return {
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe",
        "client_assertion": td.mint_svid(DEV_GATEWAY, ISSUER, now=now),
        "subject_token": td.mint_svid(DEV_AGENT, ISSUER, now=now),
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "requested_token_type": "urn:ietf:params:oauth:token-type:txn_token",
        "audience": "dev.writ.local",
        "scope": "demo.read",
    }


def agent_body(spiffe_id: str = AGENT, **extra: Any) -> dict[str, Any]:
    return {"spiffe_id": spiffe_id, "owner": "team-travel", "description": "travel agent",
            "charter": CHARTER, **extra}


def private_jwk(kid: str = "k1", **extra: Any) -> dict[str, Any]:
    return {**ECKey.generate_key("P-256", private=True).as_dict(private=True), "kid": kid,
            **extra}


def public_jwk(kid: str = "k1") -> dict[str, Any]:
    jwk = private_jwk(kid)
    del jwk["d"]
    return jwk


# --- authentication (RFC 6750 §3) ----------------------------------------------------


def test_missing_token_is_401_invalid_token(client: TestClient) -> None:
    r = client.get("/v1/agents")
    assert r.status_code == 401
    assert r.json() == {"error": "invalid_token",
                        "error_description": "an admin bearer token is required"}
    assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert r.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("authorization", [
    "Bearer writ_adm_0000000000000000_not-the-secret",
    "Bearer not-even-an-admin-token",
    "Basic d3JpdDp3cml0",
    "Bearer",
], ids=["unknown-id", "foreign-token", "basic-scheme", "empty-bearer"])
def test_bad_token_is_401_and_never_echoed(client: TestClient, root: str,
                                           authorization: str) -> None:
    r = client.get("/v1/agents", headers={"Authorization": authorization})
    assert r.status_code == 401
    assert r.json()["error"] == "invalid_token"
    assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    presented = authorization.partition(" ")[2]
    if presented:
        assert presented not in r.text
        assert presented not in json.dumps(dict(r.headers))


def test_wrong_secret_for_a_real_id_is_401(client: TestClient, root: str) -> None:
    forged = root[: -4] + ("AAAA" if not root.endswith("AAAA") else "BBBB")
    r = client.get("/v1/agents", headers=bearer(forged))
    assert r.status_code == 401
    assert forged not in r.text


def test_expired_and_revoked_tokens_are_401(client: TestClient, issue: Issue, root: str,
                                            clock: FrozenClock) -> None:
    short = issue("agents:read", expires_at=T0 + 10)
    assert client.get("/v1/agents", headers=bearer(short)).status_code == 200
    clock.advance(10)
    assert client.get("/v1/agents", headers=bearer(short)).status_code == 401

    other = issue("agents:read")
    r = client.delete(f"/v1/admin-tokens/{token_id(other)}", headers=bearer(root))
    assert r.status_code == 204
    assert client.get("/v1/agents", headers=bearer(other)).status_code == 401


def test_wrong_scope_is_403_insufficient_scope(client: TestClient, issue: Issue) -> None:
    reader = issue("agents:read")
    r = client.post("/v1/agents", json=agent_body(), headers=bearer(reader))
    assert r.status_code == 403
    assert r.json() == {"error": "insufficient_scope",
                        "error_description": "this call needs the agents:write scope"}
    assert r.headers["www-authenticate"] == \
        'Bearer error="insufficient_scope", scope="agents:write"'
    r = client.get("/v1/keys", headers=bearer(reader))
    assert r.status_code == 403
    assert r.headers["www-authenticate"] == 'Bearer error="insufficient_scope", scope="keys:read"'


@pytest.mark.parametrize(("method", "path", "scope"), [
    ("GET", "/v1/trust-domains", "trust-domains:read"),
    ("DELETE", "/v1/trust-domains/x.test", "trust-domains:write"),
    ("GET", f"/v1/agents/{DEV_AGENT}", "agents:read"),
    ("POST", f"/v1/agents/{DEV_AGENT}/suspend", "agents:write"),
    ("GET", "/v1/gateways", "gateways:read"),
    ("POST", f"/v1/gateways/{DEV_GATEWAY}/suspend", "gateways:write"),
    ("GET", "/v1/admin-tokens", "admin-tokens:write"),
    ("GET", "/v1/keys", "keys:read"),
    ("POST", "/v1/keys/rotate", "keys:write"),
])
def test_each_route_names_its_scope(client: TestClient, issue: Issue, method: str, path: str,
                                    scope: str) -> None:
    others = sorted(ALL_SCOPES - {scope})
    r = client.request(method, path, headers=bearer(issue(*others)))
    assert r.status_code == 403
    assert r.headers["www-authenticate"] == f'Bearer error="insufficient_scope", scope="{scope}"'


# --- trust domains -------------------------------------------------------------------


def test_trust_domain_lifecycle(client: TestClient, root: str) -> None:
    h = bearer(root)
    first, second = DevTrustDomain.generate("other.test"), DevTrustDomain.generate("other.test")
    r = client.post("/v1/trust-domains", headers=h,
                    json={"name": "other.test", "bundle": first.bundle()})
    assert r.status_code == 201
    assert r.headers["cache-control"] == "no-store"
    inline_status = {"fresh": True, "key_count": 1, "x509_authority_count": 0,
                     "ignored_elements": 0, "sequence": None, "refresh_hint_s": 300,
                     "last_refresh_at": T0, "last_attempt_at": None, "next_refresh_at": None,
                     "last_error": None, "consecutive_failures": 0, "replica": ANY}
    created = {"name": "other.test", "source": "inline", "location": None, "key_count": 1,
               "endpoint_profile": None, "endpoint_spiffe_id": None, "ca_file": None,
               "updated_at": T0, "status": inline_status}
    assert r.json() == created

    r = client.get("/v1/trust-domains", headers=h)
    assert r.json() == [
        {**created, "name": "dev.writ.local"},
        created,
    ]
    assert client.get("/v1/trust-domains/other.test", headers=h).json() == created

    both = {"keys": first.bundle()["keys"] + second.bundle()["keys"]}
    r = client.patch("/v1/trust-domains/other.test", headers=h, json={"bundle": both})
    assert r.status_code == 200
    assert r.json() == {**created, "key_count": 2,
                        "status": {**inline_status, "key_count": 2, "refresh_hint_s": None}}

    r = client.post("/v1/trust-domains", headers=h,
                    json={"name": "other.test", "bundle": first.bundle()})
    assert r.status_code == 409
    assert r.json() == {"error": "conflict",
                        "error_description": "trust domain other.test already exists"}

    assert client.delete("/v1/trust-domains/other.test", headers=h).status_code == 204
    r = client.get("/v1/trust-domains/other.test", headers=h)
    assert r.status_code == 404
    assert r.json() == {"error": "not_found", "error_description": "no trust domain other.test"}
    assert client.delete("/v1/trust-domains/other.test", headers=h).status_code == 404


def test_trust_domain_endpoint_source(client: TestClient, root: str) -> None:
    r = client.post("/v1/trust-domains", headers=bearer(root), json={
        "name": "remote.test", "source": "endpoint", "location": "https://remote.test/bundle"})
    assert r.status_code == 201
    body = r.json()
    status = body.pop("status")
    assert body == {"name": "remote.test", "source": "endpoint",
                    "location": "https://remote.test/bundle", "key_count": 0,
                    "endpoint_profile": None, "endpoint_spiffe_id": None, "ca_file": None,
                    "updated_at": T0}
    # nothing fetched yet (remote.test does not resolve): not fresh, no keys
    assert (status["fresh"], status["key_count"], status["last_refresh_at"]) == (
        False, None, None)


@pytest.mark.parametrize(("body", "description"), [
    ({"name": "bad.test", "bundle": {"keys": [private_jwk(use="jwt-svid")]}},
     "bundle: keys[0]: a trust bundle must not carry private key members"),
    ({"name": "bad.test", "bundle": {"keys": [{**public_jwk(), "use": "jwt-svid",
                                               "alg": "HS256"}]}},
     "bundle: keys[0]: alg 'HS256' is not a JWT-SVID algorithm (§2.1)"),
    ({"name": "bad.test", "bundle": {"nokeys": []}}, "bundle: bundle must have a 'keys' array"),
    ({"name": "bad.test"}, "an inline trust domain needs a bundle"),
    ({"name": "bad.test", "source": "file"},
     "a file trust domain needs the bundle file's path as location"),
    ({"name": "bad.test", "source": "endpoint", "location": "http://bad.test/bundle"},
     "an endpoint trust domain needs an https:// location without userinfo or fragment"),
], ids=["private-member", "hs256", "no-keys", "inline-without-bundle", "file-without-path",
        "endpoint-not-https"])
def test_trust_domain_refusals(client: TestClient, root: str, body: dict[str, Any],
                               description: str) -> None:
    r = client.post("/v1/trust-domains", headers=bearer(root), json=body)
    assert r.status_code == 422
    assert r.json() == {"error": "invalid_request", "error_description": description}


def test_trust_domain_bad_name_is_422(client: TestClient, root: str) -> None:
    r = client.post("/v1/trust-domains", headers=bearer(root),
                    json={"name": "Upper.Test", "bundle": {"keys": []}})
    assert r.status_code == 422
    assert r.json() == {"error": "invalid_request", "error_description":
                        "trust domain must be a bare lowercase name, not 'Upper.Test'"}


# --- agents --------------------------------------------------------------------------


def test_agent_lifecycle(client: TestClient, root: str, engine: Engine) -> None:
    h = bearer(root)
    r = client.post("/v1/agents", headers=h, json=agent_body())
    assert r.status_code == 201
    assert r.headers["cache-control"] == "no-store"
    created = {
        "spiffe_id": AGENT, "owner": "team-travel", "description": "travel agent",
        "enrollment_expires_at": None, "status": "active", "charter_version": 1,
        "charter_hash": charter_hash(Charter.model_validate(CHARTER)), "charter": FULL_CHARTER,
        "enrolled_by": token_id(root), "created_at": T0, "updated_at": T0,
    }
    assert r.json() == created

    r = client.get("/v1/agents", headers=h)
    assert [a["spiffe_id"] for a in r.json()] == [DEV_AGENT, AGENT]
    r = client.get("/v1/agents?offset=1&limit=1", headers=h)
    assert r.json() == [created]
    assert client.get(f"/v1/agents/{AGENT}", headers=h).json() == created

    r = client.patch(f"/v1/agents/{AGENT}", headers=h, json={"owner": "team-b"})
    assert r.status_code == 200
    assert r.json() == {**created, "owner": "team-b"}

    r = client.post(f"/v1/agents/{AGENT}/suspend", headers=h)
    assert r.status_code == 200
    assert r.json() == {**created, "owner": "team-b", "status": "suspended"}
    r = client.post(f"/v1/agents/{AGENT}/resume", headers=h)
    assert r.json() == {**created, "owner": "team-b", "status": "active"}

    assert client.delete(f"/v1/agents/{AGENT}", headers=h).status_code == 204
    r = client.get(f"/v1/agents/{AGENT}", headers=h)
    assert r.status_code == 404
    assert r.json() == {"error": "not_found", "error_description": f"no agent {AGENT}"}

    assert [(a.reason, a.agent, a.detail) for a in admin_rows(engine)] == [
        ("agent.created", AGENT, {"by": token_id(root), "charter_version": 1,
                                  "charter_hash": created["charter_hash"]}),
        ("agent.updated", AGENT, {"by": token_id(root), "changed": ["owner"],
                                  "charter_version": 1,
                                  "charter_hash": created["charter_hash"]}),
        ("agent.suspended", AGENT, {"by": token_id(root)}),
        ("agent.resumed", AGENT, {"by": token_id(root)}),
        ("agent.removed", AGENT, {"by": token_id(root)}),
    ]
    assert all(a.decision == "changed" for a in admin_rows(engine))


def test_charter_update_makes_a_new_version(client: TestClient, root: str) -> None:
    h = bearer(root)
    before = client.post("/v1/agents", headers=h, json=agent_body()).json()
    new_charter = {**CHARTER, "scopes": ["travel.book", "travel.cancel"]}
    r = client.patch(f"/v1/agents/{AGENT}", headers=h, json={"charter": new_charter})
    assert r.status_code == 200
    after = r.json()
    assert after["charter_version"] == 2
    assert after["charter_hash"] == charter_hash(Charter.model_validate(new_charter))
    assert after["charter_hash"] != before["charter_hash"]
    assert after["charter"]["scopes"] == ["travel.book", "travel.cancel"]


def test_agent_ids_may_be_percent_encoded(client: TestClient, root: str) -> None:
    encoded = DEV_AGENT.replace(":", "%3A").replace("/", "%2F")
    r = client.get(f"/v1/agents/{encoded}", headers=bearer(root))
    assert r.status_code == 200
    assert r.json()["spiffe_id"] == DEV_AGENT


def test_duplicate_enrollment_is_409(client: TestClient, root: str) -> None:
    r = client.post("/v1/agents", headers=bearer(root), json=agent_body(DEV_AGENT))
    assert r.status_code == 409
    assert r.json() == {"error": "conflict",
                        "error_description": f"agent {DEV_AGENT} is already enrolled"}


@pytest.mark.parametrize(("body", "description"), [
    (agent_body("https://not.spiffe/agent"), "malformed SPIFFE ID"),
    (agent_body("spiffe://Dev.Writ.Local/agents/x"), "SPIFFE ID is not in canonical"),
    (agent_body(charter={**CHARTER, "max_ttl_s": 7200}),
     "charter.max_ttl_s: Input should be less than or equal to 3600"),
    (agent_body(charter={**CHARTER, "approve_everything": True}),
     "charter.approve_everything: Extra inputs are not permitted"),
    (agent_body(charter={**CHARTER, "scopes": ["has space"]}),
     "charter.scopes.0: String should match pattern"),
    (agent_body(charter={**CHARTER, "delegate_to": ["not-a-pattern"]}),
     "a pattern must start with spiffe://"),
    ({"spiffe_id": AGENT, "charter": CHARTER}, "owner: Field required"),
], ids=["not-spiffe", "uppercase-td", "ttl-too-long", "unknown-member", "bad-scope",
        "bad-delegate", "no-owner"])
def test_agent_validation_is_422(client: TestClient, root: str, body: dict[str, Any],
                                 description: str) -> None:
    r = client.post("/v1/agents", headers=bearer(root), json=body)
    assert r.status_code == 422
    assert r.json()["error"] == "invalid_request"
    assert description in r.json()["error_description"]


def test_agent_patch_refuses_nulls_and_unknown_agents(client: TestClient, root: str) -> None:
    h = bearer(root)
    r = client.patch(f"/v1/agents/{DEV_AGENT}", headers=h, json={"owner": None})
    assert r.status_code == 422
    assert r.json() == {"error": "invalid_request", "error_description": "owner cannot be null"}
    r = client.patch(f"/v1/agents/{AGENT}", headers=h, json={"owner": "x"})
    assert r.status_code == 404
    r = client.post(f"/v1/agents/{AGENT}/suspend", headers=h)
    assert r.status_code == 404


def test_list_limit_is_bounded(client: TestClient, root: str) -> None:
    r = client.get("/v1/agents?limit=501", headers=bearer(root))
    assert r.status_code == 422
    assert r.json()["error"] == "invalid_request"
    assert r.json()["error_description"].startswith("query.limit: ")
    assert client.get("/v1/agents?limit=500", headers=bearer(root)).status_code == 200
    assert client.get("/v1/agents?offset=-1", headers=bearer(root)).status_code == 422


# --- registrar namespace bounds ------------------------------------------------------


def test_registrar_is_bound_to_its_namespaces(client: TestClient, issue: Issue,
                                              root: str) -> None:
    registrar = bearer(issue("agents:read", "agents:write", namespaces=(TEAM_A,)))
    inside = "spiffe://dev.writ.local/agents/team-a/helper"
    r = client.post("/v1/agents", headers=registrar, json=agent_body(inside))
    assert r.status_code == 201

    refused = {"error": "forbidden",
               "error_description": "this admin token may not manage agents outside its "
                                    "namespaces"}
    for method, path, body in [
        ("POST", "/v1/agents", agent_body("spiffe://dev.writ.local/agents/team-ab/x")),
        ("GET", f"/v1/agents/{DEV_AGENT}", None),
        ("PATCH", f"/v1/agents/{DEV_AGENT}", {"owner": "me"}),
        ("POST", f"/v1/agents/{DEV_AGENT}/suspend", None),
        ("POST", f"/v1/agents/{DEV_AGENT}/resume", None),
        ("DELETE", f"/v1/agents/{DEV_AGENT}", None),
    ]:
        r = client.request(method, path, headers=registrar, json=body)
        assert (r.status_code, r.json()) == (403, refused), (method, path)

    r = client.get("/v1/agents", headers=registrar)
    assert [a["spiffe_id"] for a in r.json()] == [inside]
    assert client.get("/v1/agents?offset=1", headers=registrar).json() == []
    assert client.get(f"/v1/agents/{DEV_AGENT}", headers=bearer(root)).status_code == 200


def test_registrar_cannot_widen_a_gateway_or_a_token(client: TestClient, issue: Issue) -> None:
    registrar = bearer(issue("gateways:write", "admin-tokens:write", "agents:read",
                             namespaces=(TEAM_A,)))
    r = client.post("/v1/gateways", headers=registrar, json={
        "client_id": GATEWAY, "agent_namespaces": ["spiffe://dev.writ.local/agents/**"]})
    assert r.status_code == 403
    assert r.json()["error"] == "forbidden"
    r = client.post(f"/v1/gateways/{DEV_GATEWAY}/suspend", headers=registrar)
    assert r.status_code == 403
    r = client.post("/v1/gateways", headers=registrar, json={
        "client_id": GATEWAY, "agent_namespaces": [TEAM_A]})
    assert r.status_code == 201

    for body in [
        {"name": "wider", "scopes": ["agents:read"]},
        {"name": "wider", "scopes": ["agents:read"],
         "namespaces": ["spiffe://dev.writ.local/agents/**"]},
        {"name": "more", "scopes": ["agents:write"], "namespaces": [TEAM_A]},
    ]:
        r = client.post("/v1/admin-tokens", headers=registrar, json=body)
        assert r.status_code == 403, body
        assert r.json()["error"] == "forbidden"
    r = client.post("/v1/admin-tokens", headers=registrar, json={
        "name": "narrower", "scopes": ["agents:read"],
        "namespaces": ["spiffe://dev.writ.local/agents/team-a/x/**"]})
    assert r.status_code == 201


# --- gateways ------------------------------------------------------------------------


def test_gateway_lifecycle(client: TestClient, root: str, engine: Engine) -> None:
    h = bearer(root)
    body = {"client_id": GATEWAY, "description": "travel gateway",
            "agent_namespaces": ["spiffe://dev.writ.local/agents/travel/**"]}
    r = client.post("/v1/gateways", headers=h, json=body)
    assert r.status_code == 201
    created = {**body, "auth_method": "jwt_spiffe", "token_types": [TXN_TOKEN_TYPE], "jwks": None,
               "status": "active", "created_at": T0, "updated_at": T0}
    assert r.json() == created
    assert [g["client_id"] for g in client.get("/v1/gateways", headers=h).json()] == \
        [DEV_GATEWAY, GATEWAY]
    assert client.get("/v1/gateways?offset=1", headers=h).json() == [created]
    assert client.get(f"/v1/gateways/{GATEWAY}", headers=h).json() == created

    r = client.patch(f"/v1/gateways/{GATEWAY}", headers=h, json={"description": "renamed"})
    assert r.json() == {**created, "description": "renamed"}
    r = client.post(f"/v1/gateways/{GATEWAY}/suspend", headers=h)
    assert r.json() == {**created, "description": "renamed", "status": "suspended"}
    r = client.post(f"/v1/gateways/{GATEWAY}/resume", headers=h)
    assert r.json()["status"] == "active"
    r = client.post("/v1/gateways", headers=h, json=body)
    assert r.status_code == 409
    assert client.delete(f"/v1/gateways/{GATEWAY}", headers=h).status_code == 204
    r = client.get(f"/v1/gateways/{GATEWAY}", headers=h)
    assert r.status_code == 404
    assert r.json() == {"error": "not_found", "error_description": f"no gateway {GATEWAY}"}

    assert [(a.reason, a.gateway) for a in admin_rows(engine)] == [
        ("gateway.created", GATEWAY), ("gateway.updated", GATEWAY),
        ("gateway.suspended", GATEWAY), ("gateway.resumed", GATEWAY),
        ("gateway.removed", GATEWAY),
    ]


def test_private_key_jwt_gateway_publishes_public_keys_only(client: TestClient,
                                                            root: str) -> None:
    jwk = public_jwk("gw-1")
    r = client.post("/v1/gateways", headers=bearer(root), json={
        "client_id": GATEWAY, "auth_method": "private_key_jwt", "jwks": {"keys": [jwk]},
        "agent_namespaces": ["spiffe://dev.writ.local/agents/travel/**"]})
    assert r.status_code == 201
    assert r.json()["jwks"] == {"keys": [jwk]}


@pytest.mark.parametrize(("body", "description"), [
    ({"auth_method": "private_key_jwt", "jwks": {"keys": [private_jwk()]}},
     "jwks: a published key must not carry private members"),
    ({"auth_method": "jwt_spiffe", "jwks": {"keys": [private_jwk()]}},
     "jwks: a published key must not carry private members"),
    ({"auth_method": "private_key_jwt"},
     "private_key_jwt needs a JWKS with at least one public key"),
    ({"agent_namespaces": ["dev.writ.local/agents/**"]}, "a pattern must start with spiffe://"),
    ({"client_id": "not-spiffe"}, "malformed SPIFFE ID"),
], ids=["private-key-jwt-private-member", "jwt-spiffe-private-member", "no-keys",
        "bad-namespace", "bad-client-id"])
def test_gateway_validation_is_422(client: TestClient, root: str, body: dict[str, Any],
                                   description: str) -> None:
    r = client.post("/v1/gateways", headers=bearer(root), json={"client_id": GATEWAY, **body})
    assert r.status_code == 422
    assert r.json()["error"] == "invalid_request"
    assert description in r.json()["error_description"]
    assert '"d"' not in r.text


# --- the token path sees a write at once ---------------------------------------------


def test_suspended_agent_and_gateway_get_no_token(client: TestClient, root: str,
                                                  seeded: DevTrustDomain,
                                                  clock: FrozenClock) -> None:
    h = bearer(root)
    assert client.post("/token", data=token_form(seeded, clock())).status_code == 200

    assert client.post(f"/v1/agents/{DEV_AGENT}/suspend", headers=h).status_code == 200
    r = client.post("/token", data=token_form(seeded, clock()))
    assert r.status_code == 400
    assert r.json() == {"error": "access_denied", "error_description": "the agent is not active"}

    assert client.post(f"/v1/agents/{DEV_AGENT}/resume", headers=h).status_code == 200
    assert client.post("/token", data=token_form(seeded, clock())).status_code == 200

    assert client.post(f"/v1/gateways/{DEV_GATEWAY}/suspend", headers=h).status_code == 200
    r = client.post("/token", data=token_form(seeded, clock()))
    assert r.status_code == 401
    assert r.json()["error"] == "invalid_client"


def test_removed_trust_domain_stops_verifying(client: TestClient, root: str,
                                              seeded: DevTrustDomain, clock: FrozenClock) -> None:
    h = bearer(root)
    assert client.delete("/v1/trust-domains/dev.writ.local", headers=h).status_code == 204
    r = client.post("/token", data=token_form(seeded, clock()))
    assert r.status_code in (400, 401)
    assert "access_token" not in r.json()


# --- admin tokens --------------------------------------------------------------------


def test_admin_token_lifecycle(client: TestClient, root: str, engine: Engine) -> None:
    h = bearer(root)
    r = client.post("/v1/admin-tokens", headers=h, json={
        "name": "registrar", "scopes": ["agents:write", "agents:read"], "namespaces": [TEAM_A]})
    assert r.status_code == 201
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    secret = body.pop("token")
    new_id = body["id"]
    assert secret.startswith(f"{PREFIX}{new_id}_")
    public = {"name": "registrar", "scopes": ["agents:read", "agents:write"],
              "namespaces": [TEAM_A], "expires_at": None, "id": new_id, "created_at": T0,
              "created_by": token_id(root), "revoked_at": None}
    assert body == public
    assert client.get("/v1/agents", headers=bearer(secret)).status_code == 200

    r = client.get("/v1/admin-tokens", headers=h)
    listed = {t["id"]: t for t in r.json()}
    assert listed[new_id] == public
    assert '"token"' not in r.text and "hash" not in r.text and secret not in r.text

    assert client.delete(f"/v1/admin-tokens/{new_id}", headers=h).status_code == 204
    assert client.delete(f"/v1/admin-tokens/{new_id}", headers=h).status_code == 204
    listed = {t["id"]: t for t in client.get("/v1/admin-tokens", headers=h).json()}
    assert listed[new_id]["revoked_at"] == T0
    assert client.get("/v1/agents", headers=bearer(secret)).status_code == 401
    r = client.delete("/v1/admin-tokens/ffffffffffffffff", headers=h)
    assert r.status_code == 404
    assert r.json() == {"error": "not_found",
                        "error_description": "no admin token ffffffffffffffff"}

    assert [(a.reason, a.detail) for a in admin_rows(engine)] == [
        ("admin_token.created", {"by": token_id(root), "token_id": new_id, "name": "registrar",
                                 "scopes": ["agents:read", "agents:write"],
                                 "namespaces": [TEAM_A]}),
        ("admin_token.revoked", {"by": token_id(root), "token_id": new_id}),
    ]


@pytest.mark.parametrize(("body", "start"), [
    ({"name": "x", "scopes": ["agents:fly"]}, "scopes: Value error, unknown admin scope(s)"),
    ({"name": "x", "scopes": []}, "scopes: List should have at least 1 item"),
    ({"name": "x", "scopes": ["agents:read"], "namespaces": ["nope"]},
     "a pattern must start with spiffe://"),
    ({"name": "x", "scopes": ["agents:read"], "expires_at": T0}, "expires_at must be in the "),
], ids=["unknown-scope", "no-scope", "bad-namespace", "already-expired"])
def test_admin_token_validation_is_422(client: TestClient, root: str, body: dict[str, Any],
                                       start: str) -> None:
    r = client.post("/v1/admin-tokens", headers=bearer(root), json=body)
    assert r.status_code == 422
    assert r.json()["error"] == "invalid_request"
    assert start in r.json()["error_description"]


def test_admin_token_cannot_mint_or_revoke_scopes_it_lacks(client: TestClient,
                                                            issue: Issue, root: str) -> None:
    minter = bearer(issue("admin-tokens:write", "agents:read"))
    r = client.post("/v1/admin-tokens", headers=minter,
                    json={"name": "x", "scopes": ["agents:write"]})
    assert r.status_code == 403
    assert r.json() == {"error": "forbidden", "error_description": "an admin token cannot "
                        "manage a token with scopes it does not hold"}
    assert client.delete(f"/v1/admin-tokens/{token_id(root)}", headers=minter).status_code == 403


# --- signing keys --------------------------------------------------------------------


def test_keys_list_and_rotate(client: TestClient, root: str, clock: FrozenClock,
                              engine: Engine) -> None:
    h = bearer(root)
    r = client.get("/v1/keys", headers=h)
    assert r.status_code == 200
    keys = r.json()
    assert sorted(k["state"] for k in keys) == ["active", "next"]
    for k in keys:
        assert set(k) == {"kid", "alg", "state", "created_at", "activated_at", "retired_at",
                          "publish_until", "public_jwk"}
        assert not {"d", "p", "q"} & set(k["public_jwk"])
    active = next(k["kid"] for k in keys if k["state"] == "active")
    upcoming = next(k["kid"] for k in keys if k["state"] == "next")

    r = client.post("/v1/keys/rotate", headers=h)
    assert r.status_code == 409
    assert r.json() == {"error": "conflict", "error_description": f"the next key {upcoming} "
                        "has been published for less than publish_grace_s=300s"}

    clock.advance(300)
    r = client.post("/v1/keys/rotate", headers=h)
    assert r.status_code == 200
    rotated = r.json()
    assert rotated["activated_kid"] == upcoming
    assert rotated["retired_kid"] == active
    states = {k["kid"]: k["state"] for k in client.get("/v1/keys", headers=h).json()}
    assert states == {active: "retired", upcoming: "active", rotated["next_kid"]: "next"}
    jwks_kids = {k["kid"] for k in client.get("/.well-known/jwks.json").json()["keys"]}
    assert jwks_kids == set(states)

    r = client.post("/v1/keys/rotate?force=true", headers=h)
    assert r.status_code == 200
    assert r.json()["activated_kid"] == rotated["next_kid"]
    assert [(a.reason, a.detail["forced"]) for a in admin_rows(engine)] == [
        ("keys.rotated", False), ("keys.rotated", True)]


# --- secrets -------------------------------------------------------------------------


def test_no_answer_or_audit_record_holds_an_admin_secret(client: TestClient, root: str,
                                                         engine: Engine) -> None:
    h = bearer(root)
    r = client.post("/v1/admin-tokens", headers=h,
                    json={"name": "ops", "scopes": ["agents:read", "agents:write"]})
    secret = r.json()["token"]
    answers = [
        client.get("/v1/admin-tokens", headers=h),
        client.get("/v1/agents", headers=bearer(secret)),
        client.post("/v1/agents", headers=bearer(secret), json=agent_body()),
        client.patch(f"/v1/agents/{AGENT}", headers=bearer(secret), json={"owner": None}),
        client.get("/v1/keys", headers=bearer(secret)),
        client.get("/v1/keys", headers={"Authorization": f"Bearer {secret}x"}),
        client.delete(f"/v1/admin-tokens/{token_id(secret)}", headers=h),
        client.get("/v1/agents", headers=bearer(secret)),
    ]
    for answer in answers:
        for value in (secret, root, secret[len(PREFIX):].split("_", 1)[1]):
            assert value not in answer.text
            assert value not in json.dumps(dict(answer.headers))
    trail = json.dumps([row.model_dump() for row in admin_rows(engine)])
    assert PREFIX not in trail
    assert secret not in trail and root not in trail


def test_openapi_lists_every_admin_route(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {p for p in paths if p.startswith("/v1/")} == {
        "/v1/trust-domains", "/v1/trust-domains/{name}",
        "/v1/agents", "/v1/agents/{spiffe_id}", "/v1/agents/{spiffe_id}/suspend",
        "/v1/agents/{spiffe_id}/resume",
        "/v1/gateways", "/v1/gateways/{client_id}", "/v1/gateways/{client_id}/suspend",
        "/v1/gateways/{client_id}/resume",
        "/v1/admin-tokens", "/v1/admin-tokens/{token_id}",
        "/v1/keys", "/v1/keys/rotate",
        "/v1/issuers", "/v1/issuers/{issuer}",
        "/v1/revocations", "/v1/resource-servers", "/v1/resource-servers/{client_id}",
        "/v1/resource-servers/{client_id}/suspend", "/v1/resource-servers/{client_id}/resume",
        "/v1/audit",
        "/v1/tools", "/v1/tools/{tool_id}", "/v1/tools/{tool_id}/refresh",
        "/v1/tools/{tool_id}/approve-change",
        "/v1/bounds", "/v1/bounds/{pattern}", "/v1/decisions/explain",
    }


@pytest.mark.parametrize(("body", "description"), [
    ({"bundle": {"keys": [private_jwk(use="jwt-svid")]}},
     "bundle: keys[0]: a trust bundle must not carry private key members"),
    ({"bundle": None}, "bundle cannot be null"),
    ({"source": "endpoint"},
     "an endpoint trust domain needs an https:// location without userinfo or fragment"),
], ids=["private-member", "null-bundle", "endpoint-without-location"])
def test_trust_domain_patch_refusals(client: TestClient, root: str, body: dict[str, Any],
                                     description: str) -> None:
    r = client.patch("/v1/trust-domains/dev.writ.local", headers=bearer(root), json=body)
    assert r.status_code == 422
    assert r.json() == {"error": "invalid_request", "error_description": description}
    r = client.patch("/v1/trust-domains/none.test", headers=bearer(root), json={})
    assert r.status_code == 404
