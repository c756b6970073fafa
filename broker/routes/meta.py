"""Discovery (RFC 8414), health and readiness, and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from broker.auth.clients import JWT_BEARER, JWT_SPIFFE, PRIVATE_KEY_JWT_ALGORITHMS
from broker.grants.token_exchange import GRANT_TYPE
from broker.responses import json_response
from broker.routes.health import BundleCollector, DatabaseProbe
from broker.runtime import Broker
from jwks.claims import TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT, TOKEN_TYPE_TXN_TOKEN


def bearer_svid_method(issuer: str) -> str:
    """The absolute URI (RFC 7591 §2) naming a JWT-SVID sent as ``Authorization: Bearer``
    at ``/introspect``; no registered method name covers it (docs/metadata.md)."""
    return f"{issuer}#bearer-jwt-svid"


def meta_router(broker: Broker) -> APIRouter:
    router = APIRouter()
    issuer = broker.issuer
    algs = list(PRIVATE_KEY_JWT_ALGORITHMS)
    # RFC 7591 §2: an absolute URI may name a client authentication method unregistered;
    # the jwt-spiffe assertion type (draft-ietf-oauth-spiffe-client-auth) is one
    assertion_methods = ["private_key_jwt", JWT_SPIFFE]
    metadata = {
        "issuer": issuer,
        "token_endpoint": f"{issuer}/token",
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        # RFC 8414 §2: REQUIRED, and §3.2 omits empty arrays. Writ has no authorization
        # endpoint (no grant it serves uses one), so it names the response type that
        # returns nothing (OAuth 2.0 Multiple Response Types §4); docs/metadata.md
        "response_types_supported": ["none"],
        # RFC 8414 §2: RFC 7009 revocation and RFC 7662 introspection
        "revocation_endpoint": f"{issuer}/revoke",
        "revocation_endpoint_auth_methods_supported": assertion_methods,
        # RFC 8414 §2: MUST be present when private_key_jwt is listed
        "revocation_endpoint_auth_signing_alg_values_supported": algs,
        "introspection_endpoint": f"{issuer}/introspect",
        # RFC 7662 §2.1: a resource server may also send its JWT-SVID as a Bearer token
        "introspection_endpoint_auth_methods_supported": [
            *assertion_methods, bearer_svid_method(issuer),
        ],
        "introspection_endpoint_auth_signing_alg_values_supported": algs,
        "grant_types_supported": [GRANT_TYPE],
        "token_endpoint_auth_methods_supported": assertion_methods,
        "token_endpoint_auth_signing_alg_values_supported": algs,
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

    # docs/operations.md "Health and readiness": liveness touches nothing; both run on the
    # event loop, so a busy thread pool cannot delay them
    @router.get("/healthz")
    async def healthz() -> Response:
        return json_response({"status": "ok"}, headers={"Cache-Control": "no-store"})

    database = DatabaseProbe(broker.engine, timeout_s=broker.settings.readiness_db_timeout_s)
    own_domain = broker.settings.trust_domain

    @router.get("/readyz")
    async def readyz() -> Response:
        failed: dict[str, str] = {}
        reason = await database.check()
        if reason is not None:
            failed["database"] = reason
        if broker.keyring.signer() is None:
            failed["signing_key"] = "no active signing key"
        # only this replica's own trust domain, and only when the registry names it
        if own_domain in broker.snapshot.trust_domains and broker.bundles.get(own_domain) is None:
            status = broker.bundles.status().get(own_domain)
            failed["trust_domain"] = (f"no bundle of {own_domain}"
                                      + (f": {status.last_error}" if status and status.last_error
                                         else ""))
        checks = {name: name not in failed for name in ("database", "signing_key",
                                                         "trust_domain")}
        body: dict[str, object] = {"status": "not_ready" if failed else "ready",
                                   "checks": checks}
        if failed:
            body["failed"] = failed
        return json_response(body, status=503 if failed else 200,
                             headers={"Cache-Control": "no-store"})

    bundle_metrics = CollectorRegistry(auto_describe=False)
    bundle_metrics.register(BundleCollector(broker.bundles))

    @router.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest() + generate_latest(bundle_metrics),
                        media_type=CONTENT_TYPE_LATEST)

    return router
