"""End to end over real HTTP on loopback: user → planner → mailer → search.

A real OpenID Connect issuer serves discovery and its JWKS over HTTPS (``tests.tls``);
``writ serve --dev`` runs as a subprocess trusting that issuer's CA (``SSL_CERT_FILE``).
The gateway exchanges alice's access token for the planner's Txn-Token, then replaces it
for the mailer and for the search agent. The final token is verified downstream by the
``jwks`` library (JWKS found through RFC 8414 metadata) and by PyJWT.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt as pyjwt
import pytest
from sqlmodel import Session

from broker.audit.writer import verify_chain
from broker.cli.dev import DEV_GATEWAY, DevTrustDomain
from broker.db import make_engine
from jwks import JwksClient, TxnTokenVerifier, principal, require_prior_actor
from tests.idp import TestIssuer
from tests.tls import https_server
from tests.world import MAILER, PLANNER, SEARCH, TD, USER_SCOPE, Requests, build_world

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served_idp() -> Iterator[tuple[TestIssuer, str]]:
    """The issuer over HTTPS on loopback, and the path of its CA certificate."""
    issuer = TestIssuer("https://placeholder")
    with https_server(issuer.handler) as (url, ca_path):
        issuer.issuer = url  # the handler reads it on every request
        yield issuer, ca_path


@pytest.fixture
def idp(served_idp: tuple[TestIssuer, str]) -> TestIssuer:
    return served_idp[0]


@pytest.fixture
def writ(tmp_path: Path, db_url: str,
         served_idp: tuple[TestIssuer, str]) -> Iterator[tuple[str, Path, str]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WRIT_")}
    # httpx in the server trusts the issuer's throwaway CA
    env.update({"WRIT_DATABASE_URL": db_url, "SSL_CERT_FILE": served_idp[1]})
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [str(BIN / "writ"), "serve", "--dev", "--data-dir", str(tmp_path / "data"),
         "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.2)
        yield url, tmp_path / "data", db_url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def exchange(http: httpx.Client, params: dict[str, str]) -> dict[str, Any]:
    r = http.post("/token", data=params)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body: dict[str, Any] = r.json()
    return body


def test_three_hops_over_real_http(writ: tuple[str, Path, str], idp: TestIssuer) -> None:
    url, data_dir, db_url = writ
    engine = make_engine(db_url)
    try:
        with Session(engine) as session:
            build_world(session, idp, time.time())
        td = DevTrustDomain.load_or_create(data_dir)
        req = Requests(td, url)
        with httpx.Client(base_url=url, timeout=10) as http:
            meta = http.get("/.well-known/oauth-authorization-server").json()
            assert "urn:ietf:params:oauth:token-type:txn_token" in \
                meta["subject_token_types_supported"]
            user = idp.mint("alice", scope=USER_SCOPE)
            # the snapshot poll (1 s) brings the new issuer and agents to the server
            deadline = time.monotonic() + 10
            while True:
                r = http.post("/token", data=req.on_behalf_of(user, PLANNER, time.time()))
                if r.status_code == 200 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert r.status_code == 200, r.text
            planner = r.json()
            mailer = exchange(http, req.replacement(planner["access_token"], MAILER,
                                                    time.time(), scope="mail.send search.query"))
            search = exchange(http, req.replacement(mailer["access_token"], SEARCH,
                                                    time.time(), scope="search.query"))
        token = search["access_token"]
        assert search["scope"] == "search.query"
        # Writ found the issuer's keys through OIDC discovery, over HTTPS
        assert idp.hits["/.well-known/openid-configuration"] >= 1
        assert idp.hits["/keys"] >= 1

        # downstream, with the jwks library: JWKS through RFC 8414 metadata
        with JwksClient(issuer=url) as keys:
            claims = TxnTokenVerifier(keys, issuer=url, audience=TD).verify(token)
        assert principal(claims) == f"{idp.issuer}#alice"
        assert claims.actor == SEARCH
        assert claims.actors == (PLANNER, MAILER, SEARCH)
        require_prior_actor(claims, PLANNER)
        require_prior_actor(claims, MAILER)
        assert claims.agentic_ctx["chain_metadata"]["hop_count"] == 3

        # downstream, with PyJWT: the format is standard JOSE
        signing_key = pyjwt.PyJWKClient(f"{url}/.well-known/jwks.json").get_signing_key_from_jwt(
            token)
        assert pyjwt.get_unverified_header(token)["typ"] == "txntoken+jwt"
        decoded = pyjwt.decode(token, signing_key.key, algorithms=["ES256"], audience=TD,
                               issuer=url, options={"require": ["exp", "iat", "sub", "jti"]})
        assert decoded["sub"] == f"{idp.issuer}#alice"
        assert decoded["sub_id"] == {"format": "iss_sub", "iss": idp.issuer, "sub": "alice"}
        assert decoded["act"] == {"sub": SEARCH, "act": {"sub": MAILER, "act": {"sub": PLANNER}}}
        assert [hop["sub"] for hop in decoded["act_chain"]] == [PLANNER, MAILER]
        assert decoded["req_wl"] == ",".join([DEV_GATEWAY] * 3)
        first = pyjwt.decode(planner["access_token"], signing_key.key, algorithms=["ES256"],
                             audience=TD, issuer=url)
        assert decoded["txn"] == first["txn"]
        assert decoded["exp"] <= first["exp"]

        verdict = verify_chain(engine)
        assert verdict.ok and verdict.count >= 3
    finally:
        engine.dispose()
