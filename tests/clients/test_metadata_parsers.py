"""RFC 8414 metadata as third-party parsers read it: authlib's
``AuthorizationServerMetadata.validate()`` and the MCP Python SDK's ``OAuthMetadata``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from fastapi.testclient import TestClient
from mcp.shared.auth import OAuthMetadata
from pydantic import ValidationError
from sqlalchemy import Engine

from broker.app import create_app
from broker.auth.clients import PRIVATE_KEY_JWT_ALGORITHMS
from broker.settings import Settings
from tests.conftest import FrozenClock

HTTPS_ISSUER = "https://writ.example"  # authlib requires https (RFC 8414 §2)
JWT_SPIFFE = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe"


@pytest.fixture
def metadata(settings: Settings, engine: Engine, clock: FrozenClock) -> Iterator[dict[str, Any]]:
    app = create_app(settings.model_copy(update={"issuer": HTTPS_ISSUER}), engine=engine,
                     clock=clock)
    with TestClient(app, base_url=HTTPS_ISSUER) as client:
        r = client.get("/.well-known/oauth-authorization-server")
        assert r.status_code == 200
        yield r.json()


def test_required_members_and_every_client_auth_method(metadata: dict[str, Any]) -> None:
    algs = list(PRIVATE_KEY_JWT_ALGORITHMS)
    # RFC 8414 §2: REQUIRED; no authorization endpoint, so the response type returning nothing
    assert metadata["response_types_supported"] == ["none"]
    assert "authorization_endpoint" not in metadata
    methods = ["private_key_jwt", JWT_SPIFFE]
    assert metadata["token_endpoint_auth_methods_supported"] == methods
    assert metadata["revocation_endpoint_auth_methods_supported"] == methods
    assert metadata["introspection_endpoint_auth_methods_supported"] == [
        *methods, f"{HTTPS_ISSUER}#bearer-jwt-svid"]
    # RFC 8414 §2: MUST be present when private_key_jwt is listed; never "none"
    for endpoint in ("token", "revocation", "introspection"):
        assert metadata[f"{endpoint}_endpoint_auth_signing_alg_values_supported"] == algs
    assert "none" not in algs and not any(a.startswith("HS") for a in algs)
    # RFC 8414 §3.2: zero-element arrays are omitted
    assert all(v != [] for v in metadata.values())


def test_authlib_validates_it(metadata: dict[str, Any]) -> None:
    AuthorizationServerMetadata(metadata).validate()


def test_authlib_refuses_the_document_without_the_new_members(metadata: dict[str, Any]) -> None:
    # the checks above are live: each member is one authlib insists on
    for member in ("response_types_supported",
                   "revocation_endpoint_auth_signing_alg_values_supported",
                   "introspection_endpoint_auth_signing_alg_values_supported"):
        broken = {k: v for k, v in metadata.items() if k != member}
        with pytest.raises(ValueError, match=member):
            AuthorizationServerMetadata(broken).validate()


def test_mcp_sdk_parses_every_member(metadata: dict[str, Any]) -> None:
    # The MCP SDK's model requires authorization_endpoint, which RFC 8414 §2 lets a server
    # without authorization-endpoint grants omit (docs/metadata.md). Every member Writ
    # publishes parses; the one complaint is the member Writ has no honest value for.
    with pytest.raises(ValidationError) as caught:
        OAuthMetadata.model_validate(metadata)
    assert [(e["loc"], e["type"]) for e in caught.value.errors()] == [
        (("authorization_endpoint",), "missing")]
    parsed = OAuthMetadata.model_validate(
        {**metadata, "authorization_endpoint": f"{HTTPS_ISSUER}/unused"})
    assert str(parsed.issuer).rstrip("/") == HTTPS_ISSUER
    assert str(parsed.revocation_endpoint) == f"{HTTPS_ISSUER}/revoke"
    assert parsed.response_types_supported == ["none"]
    assert parsed.introspection_endpoint_auth_signing_alg_values_supported == list(
        PRIVATE_KEY_JWT_ALGORITHMS)
    assert parsed.revocation_endpoint_auth_methods_supported == ["private_key_jwt", JWT_SPIFFE]
