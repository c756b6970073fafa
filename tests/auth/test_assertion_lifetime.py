"""``WRIT_CLIENT_ASSERTION_MAX_LIFETIME_S``: how far ahead a ``private_key_jwt`` assertion's
``exp`` may be (RFC 7523 §3 item 4), at /token and at the endpoints sharing its checks."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import ECKey
from pydantic import ValidationError
from sqlalchemy import Engine

from broker.app import create_app
from broker.cli.dev import DevTrustDomain
from broker.settings import Settings
from tests.conftest import ISSUER, T0, FrozenClock
from tests.revocation.test_revoke_audience import key  # noqa: F401  (fixture)
from tests.revocation_kit import FORM

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
PKJ = "spiffe://dev.writ.local/gateway/pkj"


def assertion_for(signer: ECKey, jti: str, lifetime_s: int = 3600) -> str:
    return jwt.encode({"alg": "ES256", "kid": "k1"},
                      {"iss": PKJ, "sub": PKJ, "aud": ISSUER, "jti": jti,
                       "iat": int(T0), "exp": int(T0) + lifetime_s}, signer, algorithms=["ES256"])


def revoke(client: TestClient, assertion: str) -> int:
    r = client.post("/revoke", headers=FORM, content=urlencode({
        "token": "x", "client_assertion_type": JWT_BEARER, "client_assertion": assertion}))
    return r.status_code


def test_default_refuses_an_hour_long_assertion(client: TestClient, key: ECKey) -> None:  # noqa: F811
    assert revoke(client, assertion_for(key, "a0", lifetime_s=600)) == 200
    assert revoke(client, assertion_for(key, "a1")) == 401


@pytest.fixture
def lenient(settings: Settings, engine: Engine, seeded: DevTrustDomain,
            clock: FrozenClock) -> Iterator[TestClient]:
    app = create_app(settings.model_copy(update={"client_assertion_max_lifetime_s": 3600}),
                     engine=engine, clock=clock)
    with TestClient(app, base_url=ISSUER) as tc:
        yield tc


def test_the_setting_allows_it(lenient: TestClient, key: ECKey) -> None:  # noqa: F811
    lenient.app.state.broker.snapshots.refresh()  # type: ignore[attr-defined]
    assert revoke(lenient, assertion_for(key, "a2")) == 200
    assert revoke(lenient, assertion_for(key, "a3", lifetime_s=3700)) == 401


def test_the_setting_is_bounded() -> None:
    with pytest.raises(ValidationError):
        Settings(client_assertion_max_lifetime_s=7200)
