"""HTTP-level answers: wrong methods on the OAuth endpoints are RFC 6749 §5.2 JSON with
``Allow`` (RFC 9110 §15.5.6); unknown paths stay JSON 404; request headers are bounded
(RFC 6585 §5: 431); ``rctx`` names where ``gateway_ip`` came from."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from broker.app import create_app
from broker.cli.dev import DevTrustDomain
from broker.settings import Settings
from tests.conftest import ISSUER, FrozenClock
from tests.grants.test_token_endpoint import audit_rows, post_token, token_params
from tests.revocation_kit import claims_of

OAUTH_ENDPOINTS = ["/token", "/introspect", "/revoke"]
WRONG_METHODS = ["GET", "PUT", "DELETE", "PATCH", "OPTIONS"]


@pytest.mark.parametrize("method", WRONG_METHODS)
@pytest.mark.parametrize("path", OAUTH_ENDPOINTS)
def test_wrong_method_is_oauth_json(path: str, method: str, client: TestClient,
                                    engine: Engine, seeded: DevTrustDomain,
                                    clock: FrozenClock) -> None:
    r = client.request(method, path, params={"token": "x"})
    assert r.status_code == 405
    assert r.headers["allow"] == "POST"
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"error": "invalid_request", "error_description": "use POST"}
    assert [r.kind for r in audit_rows(engine)] == ["key"]  # nothing was decided
    assert post_token(client, token_params(seeded, clock())).status_code == 200


@pytest.mark.parametrize("path", OAUTH_ENDPOINTS)
def test_head_is_refused_without_a_body(path: str, client: TestClient) -> None:
    r = client.head(path)
    assert r.status_code == 405
    assert r.headers["allow"] == "POST"


@pytest.mark.parametrize("path", ["/nope", "/token/extra", "/v1/nothing", "/.well-known/x"])
def test_unknown_paths_are_json_404(path: str, client: TestClient) -> None:
    for method in ("GET", "POST"):
        r = client.request(method, path)
        assert r.status_code == 404
        assert r.json() == {"detail": "Not Found"}


def test_other_wrong_methods_keep_the_framework_answer(client: TestClient) -> None:
    r = client.post("/.well-known/jwks.json")
    assert r.status_code == 405
    assert r.json() == {"detail": "Method Not Allowed"}


@pytest.mark.parametrize("headers", [
    {"X-Big": "a" * 64 * 1024},
    {"X-Big": "a" * 17 * 1024},
    {f"X-H{i}": "v" * 400 for i in range(48)},  # each small, together 19 KiB
    {"Authorization": "Bearer " + "a" * 20 * 1024},
], ids=["one-64k", "one-17k", "many-small", "huge-authorization"])
@pytest.mark.parametrize("path", ["/token", "/healthz", "/v1/agents"])
def test_large_headers_are_431(path: str, headers: dict[str, str], client: TestClient,
                               engine: Engine, seeded: DevTrustDomain,
                               clock: FrozenClock) -> None:
    r = client.post(path, headers=headers)
    assert r.status_code == 431
    assert r.json() == {"error": "invalid_request",
                        "error_description": "request headers too large"}
    assert r.headers["cache-control"] == "no-store"
    assert [r.kind for r in audit_rows(engine)] == ["key"]  # nothing was decided
    assert post_token(client, token_params(seeded, clock())).status_code == 200


def test_headers_within_the_bound_are_served(client: TestClient, seeded: DevTrustDomain,
                                             clock: FrozenClock) -> None:
    r = post_token(client, token_params(seeded, clock()), headers={"X-Note": "a" * 8 * 1024})
    assert r.status_code == 200


@pytest.fixture
def behind_proxy(settings: Settings, engine: Engine, seeded: DevTrustDomain,
                 clock: FrozenClock) -> Iterator[TestClient]:
    """Writ trusting 10.0.0.0/24, called by a peer of that network."""
    trusting = settings.model_copy(update={"trusted_proxies": ["10.0.0.0/24"]})
    app = create_app(trusting, engine=engine, clock=clock)
    with TestClient(app, base_url=ISSUER, client=("10.0.0.5", 4711)) as tc:
        yield tc


FORWARDS = [
    ({}, "10.0.0.5", "peer"),
    ({"X-Forwarded-For": "203.0.113.9"}, "203.0.113.9", "forwarded"),
    ({"X-Forwarded-For": "6.6.6.6, 203.0.113.9, 10.0.0.6"}, "203.0.113.9", "forwarded"),
    ({"X-Forwarded-For": "evil"}, "10.0.0.5", "peer"),
    # only the configured header is read
    ({"Forwarded": "for=203.0.113.9", "X-Real-IP": "203.0.113.9"}, "10.0.0.5", "peer"),
]


@pytest.mark.parametrize(("headers", "ip", "source"), FORWARDS,
                         ids=["none", "one", "chain", "garbage", "other-headers"])
def test_rctx_names_the_source_of_gateway_ip(headers: dict[str, str], ip: str, source: str,
                                             behind_proxy: TestClient, seeded: DevTrustDomain,
                                             clock: FrozenClock) -> None:
    r = post_token(behind_proxy, token_params(seeded, clock()), headers=headers)
    assert r.status_code == 200, r.text
    rctx = claims_of(r.json()["access_token"])["rctx"]
    assert (rctx["gateway_ip"], rctx["gateway_ip_source"]) == (ip, source)


@pytest.mark.parametrize("headers", [{"X-Forwarded-For": "203.0.113.9"},
                                     {"X-Real-IP": "203.0.113.9"},
                                     {"Forwarded": "for=203.0.113.9"}])
def test_forwarded_headers_are_ignored_by_default(headers: dict[str, str], client: TestClient,
                                                  seeded: DevTrustDomain,
                                                  clock: FrozenClock) -> None:
    r = post_token(client, token_params(seeded, clock()), headers=headers)
    rctx = claims_of(r.json()["access_token"])["rctx"]
    assert (rctx["gateway_ip"], rctx["gateway_ip_source"]) == ("testclient", "peer")


@pytest.mark.parametrize("value", [["not-a-network"], ["10.0.0.0/33"], ["*"]])
def test_trusted_proxies_must_be_networks(value: list[str], tmp_path: object) -> None:
    with pytest.raises(ValueError, match="trusted_proxies"):
        Settings(trusted_proxies=value)
