"""A real ``writ serve --dev`` on loopback for the third-party clients, once per session and
token profile, behind TLS terminated on loopback with a throwaway CA (``tests/tls.py``), with
a ``private_key_jwt`` gateway and resource server registered through the CLI."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from joserfc.jwk import ECKey

from broker.cli.dev import DevTrustDomain
from tests.clients.clients_kit import (
    JWT_BEARER,
    PKJ_GATEWAY,
    PROFILES,
    RESOURCE_SERVER,
    TRUST_DOMAIN,
    Party,
    TlsFront,
    Writ,
)
from tests.revocation_kit import FORM, start_writ, stop_writ, writ_cli, writ_env
from tests.tls import make_pki


def _party(directory: Path, client_id: str, name: str) -> Party:
    key = ECKey.generate_key("P-256", private=True)
    key_file = directory / f"{name}.private.jwk"
    key_file.touch(mode=0o600)
    party = Party(client_id, key, key_file)
    key_file.write_text(json.dumps(party.private_jwk()))
    (directory / f"{name}.jwks").write_text(
        json.dumps({"keys": [{**key.as_dict(private=False), "kid": "k1"}]}))
    return party


def _await_registration(writ: Writ, timeout_s: float = 30) -> None:
    """The CLI writes to the database; the server's snapshot picks it up within its poll."""
    deadline = time.monotonic() + timeout_s
    while True:
        r1 = httpx.post(f"{writ.url}/revoke", headers=FORM, verify=writ.tls, data={
            "token": "x", "client_assertion_type": JWT_BEARER,
            "client_assertion": writ.gateway.assertion(writ.url)})
        r2 = httpx.post(f"{writ.url}/introspect", headers=FORM, verify=writ.tls, data={
            "token": "x", "client_assertion_type": JWT_BEARER,
            "client_assertion": writ.resource_server.assertion(writ.url)})
        if r1.status_code == 200 and r2.status_code == 200:
            return
        assert time.monotonic() < deadline, (r1.text, r2.text)
        time.sleep(0.2)


@pytest.fixture(scope="session", params=list(PROFILES))
def writ(request: pytest.FixtureRequest,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Writ]:
    profile: str = request.param
    base = tmp_path_factory.mktemp(f"writ-clients-{profile}")
    data = base / "data"
    ca_file, cert_file, key_file = make_pki().write(base)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    front = TlsFront(context)
    # the issuer is the https front, as behind a deployment's load balancer; authlib's
    # PrivateKeyJWT signs assertions valid for 3600 s (docs/configuration.md)
    env = writ_env(f"sqlite:///{base / 'writ.db'}", WRIT_ISSUER=front.url,
                   WRIT_CLIENT_ASSERTION_MAX_LIFETIME_S="3600", **PROFILES[profile])
    try:
        server = start_writ(data, env)
    except BaseException:
        front.stop()
        raise
    try:
        front.backend_port = int(server.url.rsplit(":", 1)[1])
        keys = base / "keys"
        keys.mkdir(mode=0o700)
        gateway = _party(keys, PKJ_GATEWAY, "gateway")
        rs = _party(keys, RESOURCE_SERVER, "resource-server")
        writ_cli(env, data, "gateways", "add", "--client-id", PKJ_GATEWAY,
                 "--namespace", "spiffe://dev.writ.local/agents/**",
                 "--auth-method", "private_key_jwt", "--jwks", str(keys / "gateway.jwks"))
        writ_cli(env, data, "resource-servers", "add", "--client-id", RESOURCE_SERVER,
                 "--audience", TRUST_DOMAIN, "--auth-method", "private_key_jwt",
                 "--jwks", str(keys / "resource-server.jwks"))
        found = Writ(front.url, ca_file, ssl.create_default_context(cafile=str(ca_file)),
                     profile, DevTrustDomain.load_or_create(data), gateway, rs)
        _await_registration(found)
        yield found
    finally:
        stop_writ(server)
        front.stop()
