"""``writ demo``: the gateway -> Writ -> downstream flow against a running dev-mode Writ.

The gateway side is authlib's OAuth 2.0 client with the SPIFFE JWT-SVID client assertion
registered as a client authentication method; the downstream side is the ``jwks`` library.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from typing import Any

import httpx
from authlib.integrations.base_client.errors import OAuthError

with warnings.catch_warnings():
    # authlib announces a move to another HTTP package; its httpx client works as documented
    warnings.simplefilter("ignore", DeprecationWarning)
    from authlib.integrations.httpx_client import OAuth2Client

from broker.auth.clients import JWT_SPIFFE
from broker.cli.dev import DEV_AGENT, DEV_GATEWAY, DevTrustDomain
from broker.grants.token_exchange import GRANT_TYPE
from jwks import JwksClient, JwksError, TxnTokenVerifier
from jwks.claims import TOKEN_TYPE_JWT, TOKEN_TYPE_TXN_TOKEN


class DemoFailed(Exception):
    pass


class SpiffeJwtClientAuth:
    """authlib client auth method: the gateway's JWT-SVID as client assertion
    (draft-ietf-oauth-spiffe-client-auth; RFC 7521 §4.2 parameters)."""

    name = "spiffe_jwt"

    def __init__(self, svid: Callable[[], str]) -> None:
        self._svid = svid

    def __call__(
        self, auth: Any, method: str, uri: str, headers: Any, body: str | bytes
    ) -> tuple[str, Any, bytes]:
        text = body.decode() if isinstance(body, bytes) else body
        extra = str(
            httpx.QueryParams(
                {"client_assertion_type": JWT_SPIFFE, "client_assertion": self._svid()}
            )
        )
        return uri, headers, (f"{text}&{extra}" if text else extra).encode()


def gateway_client(svid: Callable[[], str], **kwargs: Any) -> OAuth2Client:
    client = OAuth2Client(token_endpoint_auth_method=SpiffeJwtClientAuth.name, **kwargs)
    client.register_client_auth_method(SpiffeJwtClientAuth(svid))
    return client


def run_demo(
    url: str, td: DevTrustDomain, *, echo: Callable[[str], None] = print
) -> dict[str, Any]:
    def step(n: int, text: str) -> None:
        echo(f"[{n}] {text}")

    try:
        meta = httpx.get(f"{url}/.well-known/oauth-authorization-server", timeout=10).json()
    except (httpx.HTTPError, ValueError) as err:
        raise DemoFailed(f"cannot read Writ's metadata at {url}: {err}") from err
    issuer, trust_domain = meta.get("issuer"), meta.get("trust_domain")
    if not isinstance(issuer, str) or not isinstance(trust_domain, str):
        raise DemoFailed("Writ's metadata lacks issuer or trust_domain")
    step(1, f"discovered issuer {issuer}, token endpoint {meta.get('token_endpoint')}")

    agent_svid = td.mint_svid(DEV_AGENT, issuer)
    step(
        2,
        f"agent {DEV_AGENT} holds a JWT-SVID (aud {issuer}); its gateway "
        f"{DEV_GATEWAY} authenticates with its own JWT-SVID",
    )
    client = gateway_client(lambda: td.mint_svid(DEV_GATEWAY, issuer), timeout=10)
    try:
        token = client.fetch_token(
            meta["token_endpoint"],
            grant_type=GRANT_TYPE,
            subject_token=agent_svid,
            subject_token_type=TOKEN_TYPE_JWT,
            requested_token_type=TOKEN_TYPE_TXN_TOKEN,
            audience=trust_domain,
            scope="demo.read",
            request_details=json.dumps({"intent": "writ demo"}),
        )
    except OAuthError as err:
        raise DemoFailed(f"Writ refused the token request: {err.error}: {err.description}") from err
    except httpx.HTTPError as err:
        raise DemoFailed(f"token request failed: {err}") from err
    finally:
        client.close()
    if token.get("issued_token_type") != TOKEN_TYPE_TXN_TOKEN:
        raise DemoFailed(f"unexpected issued_token_type {token.get('issued_token_type')!r}")
    step(
        3,
        f"Writ issued a Txn-Token: token_type {token['token_type']}, "
        f"expires_in {token['expires_in']} s, scope {token['scope']!r}",
    )

    keys = JwksClient(issuer=issuer)
    verifier = TxnTokenVerifier(keys, issuer=issuer, audience=trust_domain)
    try:
        claims = verifier.verify(token["access_token"])
    except JwksError as err:
        raise DemoFailed(f"downstream verification failed: {err.code}: {err}") from err
    finally:
        keys.close()
    step(
        4,
        f"downstream service verified it offline from {keys.jwks_uri}: "
        f"sub {claims.subject}, act {claims.actor}, txn {claims.txn}, "
        f"scope {sorted(claims.scope)}",
    )
    summary = {
        "sub": claims.subject,
        "act": claims.actor,
        "txn": claims.txn,
        "scope": sorted(claims.scope),
        "req_wl": claims.requesting_workload,
    }
    echo(json.dumps(summary, indent=2))
    return summary
