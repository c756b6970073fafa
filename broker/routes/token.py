"""``POST /token`` (RFC 8693 over RFC 6749 §3.2): the hot path.

It reads no database row: client authentication, the decision and minting use the
in-memory state of ``Broker``; the one write is the audit record, awaited before the
response is sent (DESIGN §6).
"""

from __future__ import annotations

import logging
import time

from fastapi import APIRouter, Request, Response
from prometheus_client import Counter, Histogram

from broker.audit.writer import AuditEvent, AuditUnavailable
from broker.decision.request import parse_form
from broker.errors import (
    InvalidRequest,
    OAuthError,
    TemporarilyUnavailable,
    UnsupportedGrantType,
)
from broker.grants.base import TokenContext
from broker.responses import NO_STORE, json_response, oauth_error_response
from broker.routes.client_address import ProxyPolicy
from broker.runtime import Broker

log = logging.getLogger("writ.token")

TOKENS = Counter("writ_tokens_issued_total", "Tokens issued", ["grant"])
DENIALS = Counter("writ_token_denials_total", "Token requests refused", ["error", "reason"])
LATENCY = Histogram(
    "writ_token_seconds",
    "Token endpoint latency",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)

FORM = "application/x-www-form-urlencoded"


async def read_bounded(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise InvalidRequest("request body too large", reason="body_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise InvalidRequest("request body too large", reason="body_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_form(request: Request, limit: int) -> dict[str, str]:
    """An OAuth endpoint's parameters: form-encoded only (RFC 6749 §3.2), bounded in size."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != FORM:
        raise InvalidRequest("content type must be application/x-www-form-urlencoded",
                             reason="bad_content_type")
    return parse_form(await read_bounded(request, limit))


MAX_HINT = 128


def token_parameter(params: dict[str, str]) -> str:
    """The ``token`` of /revoke and /introspect (REQUIRED: RFC 7009 §2.1, RFC 7662 §2.1), with
    a bounded ``token_type_hint``."""
    token = params.get("token")
    if not token:
        raise InvalidRequest("token is required", reason="token_missing")
    if len(params.get("token_type_hint", "")) > MAX_HINT:
        raise InvalidRequest("token_type_hint is too long", reason="hint_too_long")
    return token


def token_router(broker: Broker) -> APIRouter:
    router = APIRouter()
    settings = broker.settings
    proxies = ProxyPolicy.of(settings.trusted_proxies, settings.forwarded_header)

    @router.post("/token", include_in_schema=True, summary="RFC 8693 token exchange")
    async def token(request: Request) -> Response:
        started = time.perf_counter()
        now = broker.clock()
        snapshot = broker.snapshot
        # rctx.gateway_ip: the peer, or what a trusted proxy forwarded
        address = proxies.client_address(request.client.host if request.client else None,
                                         request.headers.getlist(proxies.header))
        ctx = TokenContext(
            issuer=broker.issuer,
            trust_domain=settings.trust_domain,
            snapshot=snapshot,
            svids=broker.svids,
            signer=broker.keyring.signer(),
            ttl=broker.ttl,
            max_json_depth=settings.max_json_depth,
            now=now,
            new_id=broker.new_id,
            peer_ip=address.ip,
            notes={},
            profile=settings.token_profile,
            peer_ip_source=address.source,
        )
        gateway: str | None = None
        grant_type: str | None = None
        try:
            params = await read_form(request, settings.max_body_bytes)
            grant_type = params.get("grant_type")
            if not grant_type:
                raise InvalidRequest("grant_type is required", reason="grant_type_missing")
            client = broker.clients.authenticate(
                params, authorization=request.headers.getlist("authorization"), snapshot=snapshot
            )
            gateway = client.gateway.client_id
            grant = broker.grants.get(grant_type)
            if grant is None:
                raise UnsupportedGrantType(
                    "grant_type is not supported", reason="unsupported_grant_type"
                )
            issued = grant.handle(params, client, ctx)
        except OAuthError as err:
            DENIALS.labels(err.error, err.reason).inc()
            notes = ctx.notes
            event = AuditEvent(
                kind="token",
                decision="denied",
                reason=err.reason,
                gateway=gateway,
                agent=notes.get("agent"),
                # the user or parent's subject when known (on-behalf-of, replacement)
                subject=notes.get("subject", notes.get("agent")),
                tool=notes.get("tool"),
                detail={
                    k: v
                    for k, v in {
                        "error": err.error,
                        "grant_type": grant_type if grant_type in broker.grants else None,
                        "intent": notes.get("intent"),
                        "subject_token_sha256": notes.get("subject_token_sha256"),
                        "actor_token_sha256": notes.get("actor_token_sha256"),
                    }.items()
                    if v is not None
                },
            )
            log.info(
                "token refused",
                extra={
                    "error": err.error,
                    "reason": err.reason,
                    "gateway": gateway,
                    "agent": notes.get("agent"),
                },
            )
            try:
                await broker.audit.record(event)
            except AuditUnavailable:
                return oauth_error_response(
                    TemporarilyUnavailable(
                        "the audit store is unavailable; try again", reason="audit_unavailable"
                    )
                )
            return oauth_error_response(err)
        try:
            await broker.audit.record(issued.audit)
        except AuditUnavailable:
            # fail closed: a token whose audit record is not durable is never returned
            DENIALS.labels("temporarily_unavailable", "audit_unavailable").inc()
            return oauth_error_response(
                TemporarilyUnavailable(
                    "the audit store is unavailable; try again", reason="audit_unavailable"
                )
            )
        TOKENS.labels(grant_type).inc()
        LATENCY.observe(time.perf_counter() - started)
        return json_response(issued.response, headers=NO_STORE)

    return router
