"""Discovery (RFC 8414), health and readiness, and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from broker.auth.clients import JWT_BEARER, JWT_SPIFFE, PRIVATE_KEY_JWT_ALGORITHMS
from broker.grants.token_exchange import GRANT_TYPE
from broker.responses import json_response
from broker.runtime import Broker
from jwks.claims import TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT, TOKEN_TYPE_TXN_TOKEN


def meta_router(broker: Broker) -> APIRouter:
    router = APIRouter()
    issuer = broker.issuer
    metadata = {
        "issuer": issuer,
        "token_endpoint": f"{issuer}/token",
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        # RFC 8414 §2: RFC 7009 revocation and RFC 7662 introspection
        "revocation_endpoint": f"{issuer}/revoke",
        "revocation_endpoint_auth_methods_supported": ["private_key_jwt"],
        "introspection_endpoint": f"{issuer}/introspect",
        "introspection_endpoint_auth_methods_supported": ["private_key_jwt"],
        "grant_types_supported": [GRANT_TYPE],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": list(PRIVATE_KEY_JWT_ALGORITHMS),
        # extension members: what the token endpoint accepts beyond RFC 8414's names
        "client_assertion_types_supported": [JWT_SPIFFE, JWT_BEARER],
        # docs/delegation.md: agent SVID, user access token, parent Txn-Token
        "subject_token_types_supported": [
            TOKEN_TYPE_JWT, TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_TXN_TOKEN,
        ],
        "actor_token_types_supported": [TOKEN_TYPE_JWT],
        "requested_token_types_supported": [TOKEN_TYPE_TXN_TOKEN, TOKEN_TYPE_ACCESS_TOKEN],
        "txn_token_signing_alg_values_supported": [broker.settings.keys.alg],
        "trust_domain": broker.settings.trust_domain,
    }

    @router.get("/.well-known/oauth-authorization-server")
    def discovery() -> Response:
        return json_response(metadata, headers={"Cache-Control": "public, max-age=300"})

    @router.get("/healthz")
    def healthz() -> Response:
        return json_response({"status": "ok"})

    @router.get("/readyz")
    def readyz() -> Response:
        checks = {
            "database": broker.database_ok(),
            "bundles": broker.bundles.ready(),
            "signing_key": broker.keyring.signer() is not None,
        }
        ok = all(checks.values())
        return json_response(
            {"status": "ready" if ok else "not_ready", "checks": checks},
            status=200 if ok else 503,
            headers={"Cache-Control": "no-store"},
        )

    @router.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router
