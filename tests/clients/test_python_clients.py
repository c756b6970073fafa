"""PyJWT and authlib, unmodified, against a real Writ behind TLS on loopback (each trusts
the test CA through its own TLS option): PyJWT's ``PyJWKClient``
verifies a Txn-Token; authlib's ``OAuth2Client`` with ``private_key_jwt`` introspects
(RFC 7662) and revokes (RFC 7009) it, its assertions' ``aud`` being each endpoint's URL."""

from __future__ import annotations

from typing import Any

import httpx
import jwt as pyjwt
import pytest
from authlib.integrations.httpx_client import OAuth2Client
from authlib.oauth2.rfc7523 import PrivateKeyJWT

from broker.cli.dev import DEV_AGENT
from tests.clients.clients_kit import JWT_BEARER, TRUST_DOMAIN, Party, Writ
from tests.revocation_kit import FORM

pytestmark = pytest.mark.e2e

GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
TXN = "urn:ietf:params:oauth:token-type:txn_token"
JWT_SPIFFE = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe"


def txn_token(writ: Writ) -> str:
    r = httpx.post(f"{writ.url}/token", headers=FORM, verify=writ.tls, data={
        "grant_type": GRANT, "client_assertion_type": JWT_SPIFFE,
        "client_assertion": writ.dev_gateway_svid(),
        "subject_token": writ.agent_svid(),
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "requested_token_type": TXN, "audience": TRUST_DOMAIN, "scope": "demo.read"})
    assert r.status_code == 200, r.text
    token: str = r.json()["access_token"]
    return token


def authlib_client(writ: Writ, party: Party) -> OAuth2Client:
    # no token_endpoint given: authlib signs each assertion for the URL it is sent to
    auth = PrivateKeyJWT(alg="ES256", headers={"kid": "k1"})
    return OAuth2Client(client_id=party.client_id, client_secret=party.key,
                        token_endpoint_auth_method=auth, revocation_endpoint_auth_method=auth,
                        verify=writ.tls)


def test_pyjwt_pyjwkclient_verifies_a_txn_token(writ: Writ) -> None:
    token = txn_token(writ)
    meta = httpx.get(f"{writ.url}/.well-known/oauth-authorization-server",
                     verify=writ.tls).json()
    keys = pyjwt.PyJWKClient(meta["jwks_uri"], ssl_context=writ.tls)
    signing_key = keys.get_signing_key_from_jwt(token)
    claims: dict[str, Any] = pyjwt.decode(
        token, signing_key.key, algorithms=["ES256"], issuer=writ.url, audience=TRUST_DOMAIN,
        options={"require": ["exp", "iat", "iss", "aud", "sub", "txn"]})
    assert pyjwt.get_unverified_header(token)["typ"] == "txntoken+jwt"
    assert claims["sub"] == DEV_AGENT
    assert claims["scope"] == "demo.read"
    # a token signed by anyone else fails with the same client
    forged = pyjwt.encode(claims, "k" * 32, algorithm="HS256",
                          headers={"kid": signing_key.key_id, "typ": "txntoken+jwt"})
    with pytest.raises(pyjwt.InvalidTokenError):
        pyjwt.decode(forged, signing_key.key, algorithms=["ES256"], issuer=writ.url,
                     audience=TRUST_DOMAIN)


def test_authlib_introspects_and_revokes_with_private_key_jwt(writ: Writ) -> None:
    # the dev gateway requested this one; the private_key_jwt gateway gets its own below
    token = txn_token(writ)
    with authlib_client(writ, writ.resource_server) as rs:
        r = rs.introspect_token(f"{writ.url}/introspect", token=token)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["active"] is True and body["sub"] == DEV_AGENT

    own = _pkj_token(writ)
    with authlib_client(writ, writ.gateway) as gw:
        r = gw.revoke_token(f"{writ.url}/revoke", token=own, token_type_hint="access_token")
        assert r.status_code == 200, r.text
        # RFC 7009 §2.1: a token another gateway requested is not this one's to revoke
        r = gw.revoke_token(f"{writ.url}/revoke", token=token)
        assert r.status_code == 400 and r.json()["error"] == "unauthorized_client"

    with authlib_client(writ, writ.resource_server) as rs:
        assert rs.introspect_token(f"{writ.url}/introspect", token=own).json() == {
            "active": False}
        assert rs.introspect_token(f"{writ.url}/introspect", token=token).json()["active"]


def _pkj_token(writ: Writ) -> str:
    r = httpx.post(f"{writ.url}/token", headers=FORM, verify=writ.tls, data={
        "grant_type": GRANT, "client_assertion_type": JWT_BEARER,
        "client_assertion": writ.gateway.assertion(f"{writ.url}/token"),
        "subject_token": writ.agent_svid(),
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "requested_token_type": TXN, "audience": TRUST_DOMAIN, "scope": "demo.read"})
    assert r.status_code == 200, r.text
    token: str = r.json()["access_token"]
    return token
