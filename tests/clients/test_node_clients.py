"""panva's ``openid-client`` and ``jose`` (npm, pinned by tests/clients/node/package-lock.json),
unmodified, against a real Writ on loopback.

The scripts under tests/clients/node/ print one JSON document each. Writ's issuer is https
(TLS terminated on loopback, tests/clients/conftest.py), and Node trusts the test CA through
``NODE_EXTRA_CA_CERTS``, so the scripts run as in a deployment: openid-client's
``allowInsecureRequests`` (``WRIT_ALLOW_HTTP``, dev mode's plain http) stays off.
``npm ci`` runs once per session, and
not at all while ``node_modules`` is newer than the lock file. Without Node and npm these
tests fail: CI has them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from broker.cli.dev import DEV_AGENT, DEV_GATEWAY
from tests.clients.clients_kit import TRUST_DOMAIN, Writ

pytestmark = pytest.mark.e2e

NODE_DIR = Path(__file__).parent / "node"
TXN = "urn:ietf:params:oauth:token-type:txn_token"


@pytest.fixture(scope="session")
def node_modules() -> Path:
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        pytest.fail("node and npm are required for the third-party client tests")
    installed = NODE_DIR / "node_modules" / ".package-lock.json"
    lock = NODE_DIR / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        result = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR,
                                capture_output=True, text=True, timeout=300, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
    return NODE_DIR / "node_modules"


def run(writ: Writ, script: str, *args: str, ok: bool = True, **env: str) -> dict[str, Any]:
    node = shutil.which("node")
    assert node is not None
    result = subprocess.run(
        [node, script, *args], cwd=NODE_DIR, capture_output=True, text=True, timeout=60,
        check=False, env={"PATH": os.environ.get("PATH", ""),
                          "NODE_EXTRA_CA_CERTS": str(writ.ca_file), **env})
    assert (result.returncode == 0) is ok, result.stdout + result.stderr
    out: dict[str, Any] = json.loads(result.stdout)
    return out


def gateway_env(writ: Writ, **extra: str) -> dict[str, str]:
    return {"WRIT_ISSUER": writ.url, "TRUST_DOMAIN": TRUST_DOMAIN,
            "SCOPE": "demo.read", "AGENT_SVID": writ.agent_svid(), **extra}


def private_key_jwt(writ: Writ) -> dict[str, str]:
    return {"GATEWAY_ID": writ.gateway.client_id, "GATEWAY_KEY_FILE": str(writ.gateway.key_file)}


def jwt_spiffe(writ: Writ) -> dict[str, str]:
    return {"GATEWAY_ID": DEV_GATEWAY, "GATEWAY_SVID": writ.dev_gateway_svid()}


def introspect(node_modules: Path, writ: Writ, token: str) -> dict[str, Any]:
    return run(writ, "introspect.mjs", WRIT_ISSUER=writ.url,
               RS_ID=writ.resource_server.client_id,
               RS_KEY_FILE=str(writ.resource_server.key_file), TOKEN=token)


@pytest.mark.parametrize("auth", [private_key_jwt, jwt_spiffe], ids=["private_key_jwt",
                                                                      "jwt_spiffe"])
def test_openid_client_gateway_exchanges_introspects_and_revokes(
    auth: Any, node_modules: Path, writ: Writ
) -> None:
    gateway = auth(writ)
    out = run(writ, "gateway.mjs", "exchange", **gateway_env(writ, **gateway))
    # RFC 8414 discovery found Writ's endpoints
    meta = out["metadata"]
    assert meta["issuer"] == writ.url
    assert meta["token_endpoint"] == f"{writ.url}/token"
    token_response = out["token"]
    assert token_response["issued_token_type"] == TXN
    assert token_response["token_type"] == "n_a"  # openid-client lower-cases N_A
    assert token_response["scope"] == "demo.read"
    token = token_response["access_token"]

    body = introspect(node_modules, writ, token)
    assert body["active"] is True
    assert body["sub"] == DEV_AGENT and body["client_id"] == gateway["GATEWAY_ID"]

    assert run(writ, "gateway.mjs", "revoke",
               **gateway_env(writ, **gateway, TOKEN=token)) == {"revoked": True}
    assert introspect(node_modules, writ, token) == {"active": False}


def test_openid_client_surfaces_a_refusal(node_modules: Path, writ: Writ) -> None:
    out = run(writ, "gateway.mjs", "exchange", ok=False,
              **gateway_env(writ, **private_key_jwt(writ), SCOPE="admin"))
    assert out["failed"] == "ResponseBodyError"
    assert (out["error"], out["status"]) == ("invalid_scope", 400)


def test_jose_verifies_a_txn_token(node_modules: Path, writ: Writ) -> None:
    token = run(writ, "gateway.mjs", "exchange",
                **gateway_env(writ, **jwt_spiffe(writ)))["token"]["access_token"]
    verify = {"JWKS_URI": f"{writ.url}/.well-known/jwks.json", "WRIT_ISSUER": writ.url,
              "TRUST_DOMAIN": TRUST_DOMAIN}
    out = run(writ, "verify.mjs", TOKEN=token, **verify)
    assert out["header"]["typ"] == "txntoken+jwt"
    assert out["payload"]["iss"] == writ.url and out["payload"]["aud"] == TRUST_DOMAIN
    assert out["payload"]["sub"] == DEV_AGENT and out["payload"]["scope"] == "demo.read"
    assert out["payload"]["req_wl"] == DEV_GATEWAY
    # each check is live: another audience, another issuer, another type all fail
    for name, value in (("TRUST_DOMAIN", "other.example"), ("WRIT_ISSUER", "http://x.test"),
                        ("TYP", "at+jwt")):
        failed = run(writ, "verify.mjs", ok=False, TOKEN=token, **{**verify, name: value})
        assert failed["code"] == "ERR_JWT_CLAIM_VALIDATION_FAILED", failed
    intro = introspect(node_modules, writ, token)
    assert intro["active"] is True
