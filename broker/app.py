"""``create_app(settings)``: the one place that wires stores, signer and routers."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from broker.admin.decisions import decisions_router
from broker.admin.issuers import issuers_router
from broker.admin.params import RefuseControlCharacterPaths
from broker.admin.revocations import revocation_router
from broker.admin.routes import admin_router
from broker.admin.tool_routes import tools_router
from broker.errors import InvalidRequest, MethodNotAllowed
from broker.logs import configure_logging
from broker.responses import oauth_error_response
from broker.revocation.service import RevocationService
from broker.routes.introspect import introspect_router
from broker.routes.meta import meta_router
from broker.routes.revoke import revoke_router
from broker.routes.token import token_router
from broker.runtime import Broker
from broker.settings import Settings
from broker.signing.routes import jwks_router

MAX_HEADERS = 64
#: the endpoints whose every answer is RFC 6749 §5.2 shaped JSON
OAUTH_ENDPOINTS = frozenset({"/token", "/introspect", "/revoke"})


class InputBounds:
    """DESIGN §8: bounded header count, header size and body size on every route."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int,
                 max_header_bytes: int = 16 * 1024) -> None:
        self.app = app
        self.max_body = max_body_bytes
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        # RFC 6585 §5: 431 when one header or all of them together are too large
        too_large = sum(len(name) + len(value) for name, value in headers) > self.max_header_bytes
        if len(headers) > MAX_HEADERS or too_large:
            await JSONResponse(
                {"error": "invalid_request",
                 "error_description": "request headers too large" if too_large
                 else "too many headers"},
                431,
                headers={"Cache-Control": "no-store"},
            )(scope, receive, send)
            return
        for name, value in headers:
            if name == b"content-length" and (not value.isdigit() or int(value) > self.max_body):
                await JSONResponse(
                    {"error": "invalid_request", "error_description": "request body too large"},
                    413,
                    headers={"Cache-Control": "no-store"},
                )(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(
    settings: Settings, *, engine: Engine | None = None, clock: Callable[[], float] = time.time
) -> FastAPI:
    configure_logging()
    broker = Broker(settings, engine=engine, clock=clock)
    revocation = RevocationService(broker)  # /revoke, /introspect, kill switch

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        broker.start()
        revocation.start()
        try:
            yield
        finally:
            revocation.stop()
            broker.stop()

    app = FastAPI(
        title="Writ",
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/docs" if settings.dev else None,
        redoc_url=None,
    )
    app.state.broker = broker
    app.state.revocation = revocation
    app.include_router(token_router(broker))
    app.include_router(jwks_router(broker.keyring))
    app.include_router(meta_router(broker))
    app.include_router(revoke_router(broker, revocation))
    app.include_router(introspect_router(broker, revocation))
    app.include_router(revocation_router(broker, revocation))
    app.include_router(admin_router(broker))
    app.include_router(issuers_router(broker))
    app.include_router(tools_router(broker))
    app.include_router(decisions_router(broker))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        if request.url.path == "/token":
            return oauth_error_response(InvalidRequest("malformed request"))
        return JSONResponse(
            {"error": "invalid_request", "error_description": _first_error(exc)}, 422,
            headers={"Cache-Control": "no-store"},  # as every admin answer
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405 and request.url.path in OAUTH_ENDPOINTS:
            # RFC 9110 §15.5.6: 405 names the allowed methods; the body is RFC 6749 §5.2 JSON
            allow = (exc.headers or {}).get("Allow", "POST")
            return oauth_error_response(MethodNotAllowed(
                f"use {allow}", reason="method_not_allowed", headers={"Allow": allow}))
        return await http_exception_handler(request, exc)

    app.add_middleware(InputBounds, max_body_bytes=settings.max_body_bytes,
                       max_header_bytes=settings.max_header_bytes)
    # one spelling per SPIFFE ID: no control character in a URL path (docs/security.md)
    app.add_middleware(RefuseControlCharacterPaths)
    return app


def _first_error(exc: RequestValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "invalid request"
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    return f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg"))
