"""``POST /introspect`` (RFC 7662) for registered resource servers.

A resource server authenticates (RFC 7662 §2.1) with its own JWT-SVID, audience = Writ's
issuer, either as ``Authorization: Bearer`` or as a ``jwt-spiffe`` client assertion, or with
RFC 7523 ``private_key_jwt``. It may introspect only tokens whose ``aud`` is among its
registered audiences; any other token is reported ``{"active": false}`` (§2.2).

The answer comes from memory (keys, registry snapshot, revocation set): no database row is
read, and nothing is written: introspection changes nothing, so it leaves no audit record.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response
from prometheus_client import Counter

from broker.auth.authorization import (
    Credentials,
    MalformedAuthorization,
    parse_authorization,
    require_one_method,
)
from broker.auth.resource_servers import ResourceServerView
from broker.auth.svid import SvidError
from broker.errors import InvalidClient, InvalidToken, OAuthError
from broker.responses import NO_STORE, challenge, json_response, oauth_error_response
from broker.revocation.introspection import introspection_body
from broker.revocation.service import RevocationService
from broker.routes.token import read_form, token_parameter
from broker.runtime import Broker
from registry.models import GatewayAuthMethod, Status

log = logging.getLogger("writ.introspect")

INTROSPECTIONS = Counter("writ_introspections_total", "POST /introspect answers", ["result"])


def _bearer_failed(reason: str) -> InvalidToken:
    # RFC 7662 §2.3 and RFC 6750 §3.1: a bad bearer credential is invalid_token, in the body
    # and in the Bearer challenge alike
    return InvalidToken("client authentication failed", reason=reason,
                        headers=challenge("Bearer", InvalidToken.error))


def introspect_router(broker: Broker, service: RevocationService) -> APIRouter:
    router = APIRouter()

    def by_bearer(header: Credentials) -> ResourceServerView:
        if not header.is_scheme("bearer"):
            # no shared secrets: Basic and every other scheme are refused
            raise InvalidClient(
                "client authentication failed", reason="unsupported_auth_scheme",
                headers=challenge(header.scheme, InvalidClient.error),
            )
        try:
            svid = broker.svids.validate(header.credentials, (broker.issuer,))
        except SvidError as err:
            raise _bearer_failed(f"bearer_{err.reason}") from err
        rs = service.resource_servers.get(svid.spiffe_id)
        if rs is None or rs.auth_method is not GatewayAuthMethod.jwt_spiffe:
            raise _bearer_failed("unknown_resource_server")
        if rs.status is not Status.active:
            raise _bearer_failed(f"resource_server_{rs.status.value}")
        return rs

    def by_assertion(params: dict[str, str]) -> ResourceServerView:
        client = service.introspect_clients.authenticate(
            params, authorization=None, snapshot=service.resource_servers.as_clients
        )
        rs = service.resource_servers.get(client.gateway.client_id)
        if rs is None:  # removed between the two reads
            raise InvalidClient("client authentication failed", reason="unknown_resource_server")
        return rs

    @router.post("/introspect", summary="RFC 7662 token introspection")
    async def introspect(request: Request) -> Response:
        caller: str | None = None
        try:
            params = await read_form(request, broker.settings.max_body_bytes)
            try:
                header = parse_authorization(request.headers.getlist("authorization"))
            except MalformedAuthorization as err:
                raise _bearer_failed(err.reason) from err
            require_one_method(header, params)  # RFC 6749 §2.3
            rs = by_bearer(header) if header else by_assertion(params)
            caller = rs.client_id
            token = token_parameter(params)
        except OAuthError as err:
            INTROSPECTIONS.labels("refused").inc()
            log.info("introspection refused", extra={"reason": err.reason, "caller": caller})
            return oauth_error_response(err)
        inspection = service.inspector.inspect(
            token, broker.snapshot, broker.clock(), audiences=rs.audiences
        )
        INTROSPECTIONS.labels("active" if inspection.active else inspection.reason).inc()
        if not inspection.active:
            log.info("token inactive", extra={"reason": inspection.reason, "caller": caller})
        return json_response(introspection_body(inspection), headers=NO_STORE)

    return router
