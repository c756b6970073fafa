"""URL path and query parameters of the admin API that name an identity: one canonical form
per identity (docs/security.md#one-spelling-per-spiffe-id).

A SPIFFE ID or trust domain in the URL goes through the one parser (``jwks.spiffe_id``)
before any lookup: anything not canonical answers 422, never another agent's record.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Query
from fastapi.responses import JSONResponse
from pydantic import AfterValidator
from starlette.types import ASGIApp, Receive, Scope, Send

from jwks.spiffe_id import parse_spiffe_id, parse_trust_domain


def _canonical_id(value: str) -> str:
    parse_spiffe_id(value)  # InvalidSpiffeId is a ValueError: FastAPI answers 422
    return value


def _canonical_id_or_none(value: str | None) -> str | None:
    return None if value is None else _canonical_id(value)


def has_control_character(path: str) -> bool:
    """True when a decoded URL path (``scope["path"]``, not ``request.url``, whose parsing
    drops tabs and newlines) holds a C0 control character or DEL. Such a path never names
    anything: Starlette's route patterns end in ``$``, which also matches before a final
    newline, so ``/v1/agents/<id>%0A`` would otherwise reach the handler as ``<id>``."""
    return any(c < " " or c == "\x7f" for c in path)


#: a path parameter holding a SPIFFE ID in canonical form (SPIFFE-ID §2)
SpiffeIdPath = Annotated[str, AfterValidator(_canonical_id)]
#: a path parameter holding a bare trust domain name in canonical form (SPIFFE-ID §2.1)
TrustDomainPath = Annotated[str, AfterValidator(parse_trust_domain)]
#: an optional query parameter holding a SPIFFE ID
SpiffeIdQuery = Annotated[str | None, Query(max_length=2048), AfterValidator(_canonical_id_or_none)]


class RefuseControlCharacterPaths:
    """ASGI middleware: a request whose decoded path holds a control character answers 422
    ``invalid_request`` before routing, authentication or any lookup (see
    ``has_control_character``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and has_control_character(scope["path"]):
            await JSONResponse(
                {"error": "invalid_request",
                 "error_description": "the URL path holds a control character"},
                422,
                headers={"Cache-Control": "no-store"},
            )(scope, receive, send)
            return
        await self.app(scope, receive, send)
