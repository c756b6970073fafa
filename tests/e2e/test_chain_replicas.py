"""The kill switch reaches the whole chain across replicas: two ``writ serve`` processes on
one PostgreSQL database. A jti revoked through one makes every replacement derived from it
inactive at the other and unreplaceable there, and a suspension of an earlier actor does the
same, within the revocation bound of 1 s (docs/revocation.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from broker.cli.dev import DEV_AGENT, DEV_CHARTER, DEV_GATEWAY, DevTrustDomain
from tests.admin.test_admin_api import bearer
from tests.e2e.test_replicas import ISSUER, introspect, mint, replicas, wait_until  # noqa: F401
from tests.revocation_kit import (
    FORM,
    GRANT,
    JWT_SPIFFE,
    RS,
    TRUST_DOMAIN,
    Server,
    claims_of,
    writ_cli,
)

X = "spiffe://dev.writ.local/agents/demo/x"
Y = "spiffe://dev.writ.local/agents/demo/y"
TXN = "urn:ietf:params:oauth:token-type:txn_token"
JWT = "urn:ietf:params:oauth:token-type:jwt"


def replace(server: Server, td: DevTrustDomain, parent: str, delegate: str) -> httpx.Response:
    return httpx.post(f"{server.url}/token", headers=FORM, timeout=10, content=urlencode({
        "grant_type": GRANT, "client_assertion_type": JWT_SPIFFE,
        "client_assertion": td.mint_svid(DEV_GATEWAY, ISSUER),
        "subject_token": parent, "subject_token_type": TXN,
        "actor_token": td.mint_svid(delegate, ISSUER), "actor_token_type": JWT,
        "requested_token_type": TXN, "audience": TRUST_DOMAIN, "scope": "demo.read"}))


def token_of(r: httpx.Response) -> str:
    assert r.status_code == 200, r.text
    token: str = r.json()["access_token"]
    return token


@pytest.mark.e2e
@pytest.mark.postgres
def test_chain_kill_switch_across_replicas(
    replicas: tuple[Server, Server, dict[str, str], Path],  # noqa: F811
) -> None:
    a, b, env, data = replicas
    td = DevTrustDomain.load_or_create(data)
    admin = writ_cli(env, data, "admin-tokens", "create", "--name", "ops",
                     "--scope", "revocations:write", "--scope", "resource-servers:write",
                     "--scope", "agents:write").strip()
    h = bearer(admin)
    assert httpx.post(f"{a.url}/v1/resource-servers", headers=h, json={
        "client_id": RS, "audiences": [TRUST_DOMAIN]}).status_code == 201
    charter: dict[str, Any] = {"purpose": "link", "scopes": ["demo.read"]}
    for agent, to in ((X, [Y]), (Y, [])):
        r = httpx.post(f"{a.url}/v1/agents", headers=h, json={
            "spiffe_id": agent, "owner": "ops", "charter": {**charter, "delegate_to": to}})
        assert r.status_code == 201, r.text
    r = httpx.patch(f"{a.url}/v1/agents/{DEV_AGENT}", headers=h, json={
        "charter": {**DEV_CHARTER.model_dump(mode="json"), "delegate_to": [X]}})
    assert r.status_code == 200, r.text
    # B follows the registry change
    wait_until(lambda: replace(b, td, token_of(mint(a, td)), X).status_code == 200, 2.0,
               step_s=0.05)

    # a jti revoked through A: its replacements are inactive and unreplaceable at B
    t0 = token_of(mint(a, td))
    t1 = token_of(replace(b, td, t0, X))
    t2 = token_of(replace(a, td, t1, Y))
    assert [introspect(b, td, t)["active"] for t in (t0, t1, t2)] == [True, True, True]
    r = httpx.post(f"{a.url}/v1/revocations", headers=h,
                   json={"kind": "jti", "value": claims_of(t0)["jti"]})
    assert r.status_code == 201, r.text
    took = wait_until(lambda: not any(introspect(b, td, t)["active"] for t in (t0, t1, t2)),
                      1.0, step_s=0.02)
    r = replace(b, td, t1, Y)
    assert (r.status_code, r.json()["error"]) == (400, "invalid_request")
    assert r.json()["error_description"] == "the parent Txn-Token has been revoked"

    # an earlier actor suspended through A: B refuses to replace and reports inactive
    u1 = token_of(replace(a, td, token_of(mint(b, td)), X))  # DEV_AGENT earlier, X current
    assert introspect(b, td, u1)["active"] is True
    r = httpx.post(f"{a.url}/v1/agents/{DEV_AGENT}/suspend", headers=h)
    assert r.status_code == 200, r.text
    took_suspend = wait_until(lambda: introspect(b, td, u1)["active"] is False, 1.0,
                              step_s=0.02)
    r = replace(b, td, u1, Y)
    assert r.status_code == 400
    assert r.json() == {"error": "access_denied", "error_description":
                        "an earlier agent of the transaction may no longer act"}
    print("chain kill switch propagation (s):", round(took, 4), round(took_suspend, 4))
