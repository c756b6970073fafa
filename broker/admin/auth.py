"""Bearer authentication of the admin API with scoped admin tokens (DESIGN §1, RFC 6750).

The admin path is not the hot path, so each call reads its token's row. Errors never
echo the presented token.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session

from broker.admin.tokens import AdminScope, AdminToken, authenticate_admin_token
from broker.auth.authorization import MalformedAuthorization, parse_authorization
from broker.runtime import Broker

_bearer = HTTPBearer(auto_error=False, description="A Writ admin token (writ_adm_...).")


class AdminApiError(Exception):
    """An admin API refusal; ``routes.AdminRoute`` renders it as JSON."""

    def __init__(self, status: int, error: str, description: str, *,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "error_description": self.description}


def invalid_token(description: str) -> AdminApiError:
    # RFC 6750 §3.1: invalid_token answers 401 with a Bearer challenge
    return AdminApiError(401, "invalid_token", description,
                         headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


def insufficient_scope(scope: AdminScope) -> AdminApiError:
    # RFC 6750 §3.1: insufficient_scope answers 403 and MAY name the scope needed
    return AdminApiError(
        403, "insufficient_scope", f"this call needs the {scope.value} scope",
        headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope.value}"'},
    )


def forbidden(description: str) -> AdminApiError:
    return AdminApiError(403, "forbidden", description)


def require_scope(broker: Broker, scope: AdminScope) -> Callable[..., AdminToken]:
    """A dependency returning the caller's admin token row when it holds ``scope``."""

    def principal(
        request: Request,
        # declares the Bearer scheme in the OpenAPI document; the header is parsed below
        _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> AdminToken:
        try:
            header = parse_authorization(request.headers.getlist("authorization"))
        except MalformedAuthorization as err:
            # RFC 6750 §3.1: a malformed credential is invalid_token, never guessed at
            raise invalid_token("the Authorization header is malformed") from err
        if header is None or not header.is_scheme("bearer"):
            raise invalid_token("an admin bearer token is required")
        with Session(broker.engine) as session:
            row = authenticate_admin_token(session, header.credentials, now=broker.clock())
        if row is None:
            raise invalid_token("the admin token is invalid, expired or revoked")
        if scope.value not in row.scopes:
            raise insufficient_scope(scope)
        return row

    return principal
