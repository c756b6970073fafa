"""The FastAPI dependency: exactly one Txn-Token header, verified in a threadpool; exact
status, body and headers for each refusal."""

import warnings
from collections.abc import Iterator
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI
from starlette.exceptions import StarletteDeprecationWarning
from token_signer import KeySigner

from jwks.claims import TxnTokenClaims
from jwks.client import StaticKeys
from jwks.errors import JwksFetchError
from jwks.fastapi import install_txn_token_errors, txn_token_dependency
from jwks.keys import AnyKey, generate_key
from jwks.verifier import TxnTokenVerifier

with warnings.catch_warnings():
    # starlette >= 1.x warns when its TestClient runs on httpx rather than httpx2.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

NOW = 1_750_000_000
ISSUER = "https://writ.dev.writ.local"
SIGNER = KeySigner(generate_key("ES256"), "ES256")
AGENT = "spiffe://dev.writ.local/agents/coder"
CLAIMS = {
    "iss": ISSUER, "aud": "dev.writ.local", "iat": NOW - 5, "exp": NOW + 295,
    "txn": "txn-1", "jti": "jti-1", "sub": "user:alice", "scope": "tickets:read",
    "act": {"sub": AGENT},
}
TOKEN = SIGNER.sign(CLAIMS, typ="txntoken+jwt")


class Unavailable:
    def get_key(self, kid: str) -> AnyKey:
        raise JwksFetchError("JWKS unavailable")


def make_app(keys: Any = None, *, rfc6750_bodies: bool = True) -> FastAPI:
    verifier = TxnTokenVerifier(
        keys or StaticKeys({"keys": [SIGNER.public_jwk()]}),
        issuer=ISSUER, audience="dev.writ.local", clock=lambda: float(NOW),
    )
    TxnToken = Annotated[TxnTokenClaims, Depends(txn_token_dependency(verifier))]
    app = FastAPI()
    if rfc6750_bodies:
        install_txn_token_errors(app)

    @app.get("/tickets")
    def tickets(claims: TxnToken) -> dict[str, Any]:
        return {"txn": claims.txn, "actor": claims.actor, "scope": sorted(claims.scope)}

    return app


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(make_app()) as c:
        yield c


def assert_invalid_token(response: Any, description: str) -> None:
    assert response.status_code == 401
    assert response.json() == {"error": "invalid_token", "error_description": description}
    assert response.headers["www-authenticate"] == 'Txn-Token error="invalid_token"'
    assert response.headers["cache-control"] == "no-store"


def test_valid_token(client: TestClient) -> None:
    response = client.get("/tickets", headers={"Txn-Token": TOKEN})
    assert response.status_code == 200
    assert response.json() == {"txn": "txn-1", "actor": AGENT, "scope": ["tickets:read"]}


def test_header_name_is_case_insensitive(client: TestClient) -> None:
    assert client.get("/tickets", headers={"txn-token": TOKEN}).status_code == 200


def test_no_header(client: TestClient) -> None:
    assert_invalid_token(client.get("/tickets"), "missing_txn_token")


def test_two_headers(client: TestClient) -> None:
    response = client.get("/tickets", headers=[("Txn-Token", TOKEN), ("Txn-Token", TOKEN)])
    assert_invalid_token(response, "missing_txn_token")


def test_bearer_header_is_not_a_txn_token(client: TestClient) -> None:
    response = client.get("/tickets", headers={"Authorization": f"Bearer {TOKEN}"})
    assert_invalid_token(response, "missing_txn_token")


@pytest.mark.parametrize(
    ("token", "description"),
    [
        ("garbage", "malformed"),
        ("", "malformed"),
        (SIGNER.sign({**CLAIMS, "exp": NOW - 60}, typ="txntoken+jwt"), "expired"),
        (SIGNER.sign(CLAIMS, typ="at+jwt"), "invalid_typ"),
        (SIGNER.sign({**CLAIMS, "aud": "prod.writ.local"}, typ="txntoken+jwt"), "invalid_aud"),
        (KeySigner(generate_key("ES256"), "ES256").sign(CLAIMS, typ="txntoken+jwt"),
         "unknown_kid"),
    ],
    ids=["garbage", "empty", "expired", "wrong-typ", "wrong-aud", "unknown-kid"],
)
def test_invalid_token(client: TestClient, token: str, description: str) -> None:
    response = client.get("/tickets", headers={"Txn-Token": token})
    assert_invalid_token(response, description)
    assert token == "" or token not in response.text


def test_keys_unavailable_is_503() -> None:
    with TestClient(make_app(Unavailable())) as c:
        response = c.get("/tickets", headers={"Txn-Token": TOKEN})
    assert response.status_code == 503
    assert response.json() == {
        "error": "temporarily_unavailable", "error_description": "jwks_unavailable",
    }
    assert "www-authenticate" not in response.headers
    assert response.headers["cache-control"] == "no-store"


def test_without_installed_handler_body_is_under_detail() -> None:
    with TestClient(make_app(rfc6750_bodies=False)) as c:
        response = c.get("/tickets")
    assert response.status_code == 401
    assert response.json() == {
        "detail": {"error": "invalid_token", "error_description": "missing_txn_token"},
    }
    assert response.headers["www-authenticate"] == 'Txn-Token error="invalid_token"'
