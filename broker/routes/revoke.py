"""``POST /revoke`` (RFC 7009): a gateway revokes a token it requested.

The gateway authenticates exactly as at ``/token``. A token Writ cannot verify, or one already
expired, needs no revocation: 200 (RFC 7009 §2.2). A token another gateway requested is
refused (§2.1). Otherwise its ``jti`` is revoked durably, on every replica within the
snapshot's bound, and the change is an audit record.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Request, Response
from prometheus_client import Counter
from sqlalchemy.exc import SQLAlchemyError

from broker.audit.writer import AuditEvent, AuditUnavailable
from broker.auth.svid import token_fingerprint
from broker.errors import OAuthError, TemporarilyUnavailable, UnauthorizedClient
from broker.responses import NO_STORE, oauth_error_response
from broker.revocation.revoked import RevocationKind
from broker.revocation.service import RevocationService, revocation_event
from broker.revocation.store import RevocationCreate
from broker.routes.token import read_form, token_parameter
from broker.runtime import Broker
from jwks.errors import InvalidToken

log = logging.getLogger("writ.revoke")

REVOCATIONS = Counter("writ_revocations_total", "POST /revoke outcomes", ["outcome"])
#: RFC 7009 §2.1 names these hints; §2.2.1 lets a server answer unsupported_token_type, but
#: Writ extends its search to every type it issues, so any hint is accepted.


def _owner(raw: object) -> str | None:
    if not isinstance(raw, dict):
        return None
    # Txn-Tokens carry req_wl; RFC 9068 access tokens carry client_id
    owner = raw.get("req_wl") or raw.get("client_id")
    # req_wl is a comma-separated call chain (agents-02 §3.4.1); the last one requested it
    return owner.rsplit(",", 1)[-1] if isinstance(owner, str) else None


def revoke_router(broker: Broker, service: RevocationService) -> APIRouter:
    router = APIRouter()

    async def audited(event: AuditEvent) -> Response | None:
        try:
            await broker.audit.record(event)
        except AuditUnavailable:
            return oauth_error_response(
                TemporarilyUnavailable("the audit store is unavailable; try again",
                                       reason="audit_unavailable")
            )
        return None

    @router.post("/revoke", summary="RFC 7009 token revocation")
    async def revoke(request: Request) -> Response:
        gateway: str | None = None
        try:
            params = await read_form(request, broker.settings.max_body_bytes)
            client = service.revoke_clients.authenticate(
                params, authorization=request.headers.getlist("authorization"),
                snapshot=broker.snapshot,
            )
            gateway = client.gateway.client_id
            token = token_parameter(params)
        except OAuthError as err:
            REVOCATIONS.labels("refused").inc()
            log.info("revocation refused", extra={"reason": err.reason, "gateway": gateway})
            return oauth_error_response(err)

        fingerprint = token_fingerprint(token)
        try:
            verified = service.inspector.verify(token)
        except InvalidToken as err:
            # RFC 7009 §2.2: an invalid token is not an error; nothing to revoke
            REVOCATIONS.labels("ignored").inc()
            return await audited(AuditEvent(
                kind="revocation", decision="ignored", reason=f"token_{err.code}",
                gateway=gateway, detail={"by": gateway, "token_sha256": fingerprint},
            )) or Response(status_code=200, headers=NO_STORE)
        claims = verified.claims
        if _owner(dict(claims.raw)) != gateway:
            # RFC 7009 §2.1: the token must have been issued to the client revoking it
            REVOCATIONS.labels("refused").inc()
            refusal = UnauthorizedClient("the token was not issued to this client",
                                         reason="not_token_owner")
            return await audited(AuditEvent(
                kind="revocation", decision="denied", reason=refusal.reason, gateway=gateway,
                jti=claims.jti, detail={"by": gateway, "token_sha256": fingerprint},
            )) or oauth_error_response(refusal)
        now = broker.clock()
        if now >= claims.expires_at or broker.revocations.is_revoked(claims):
            REVOCATIONS.labels("ignored").inc()
            reason = "token_expired" if now >= claims.expires_at else "already_revoked"
            return await audited(AuditEvent(
                kind="revocation", decision="ignored", reason=reason, gateway=gateway,
                jti=claims.jti, detail={"by": gateway, "token_sha256": fingerprint},
            )) or Response(status_code=200, headers=NO_STORE)
        try:
            revoked = await asyncio.to_thread(
                service.revoke,
                RevocationCreate(kind=RevocationKind.jti, value=claims.jti,
                                 reason="revoked by its gateway"),
                by=gateway, suspend=False, token_exp=claims.expires_at,
            )
        except SQLAlchemyError:
            log.error("revocation not stored: database unavailable")
            return oauth_error_response(TemporarilyUnavailable(
                "the revocation could not be stored; try again", reason="database_unavailable"))
        REVOCATIONS.labels("revoked").inc()
        event = revocation_event(revoked, by=gateway, gateway=gateway, txn=claims.txn,
                                 agent=claims.actor, subject=claims.subject,
                                 detail={"token_sha256": fingerprint})
        failed = await audited(event)
        if failed is not None:
            # the revocation stands; only its record is missing: say so, the client retries
            log.error("revocation stored but its audit record was not written")
            return failed
        return Response(status_code=200, headers=NO_STORE)

    return router
