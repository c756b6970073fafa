"""OAuth errors with their wire codes on the class (RFC 6749 §5.2, RFC 8693 §2.2.2).

Each carries a safe ``description`` for the wire and a machine-readable ``reason`` for the
audit record. The cause (``from err``) goes to the log, never to the wire.
"""

from __future__ import annotations

from typing import ClassVar


class OAuthError(Exception):
    error: ClassVar[str] = "invalid_request"
    status_code: ClassVar[int] = 400

    def __init__(
        self, description: str, *, reason: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(description)
        self.description = description
        self.reason = reason or self.error
        self.headers = headers or {}

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


class InvalidRequest(OAuthError):
    error = "invalid_request"


class MethodNotAllowed(InvalidRequest):
    # RFC 6749 §3.2: the token endpoint takes POST; a wrong method is a malformed request,
    # answered 405 (RFC 9110 §15.5.6)
    status_code = 405


class InvalidClient(OAuthError):
    # RFC 6749 §5.2: 401 when the client attempted to authenticate via a scheme
    error = "invalid_client"
    status_code = 401


class InvalidToken(OAuthError):
    # RFC 6750 §3.1: a bearer credential (at /introspect) expired, malformed or invalid
    error = "invalid_token"
    status_code = 401


class InvalidGrant(OAuthError):
    error = "invalid_grant"


class UnauthorizedClient(OAuthError):
    error = "unauthorized_client"


class UnsupportedGrantType(OAuthError):
    error = "unsupported_grant_type"


class InvalidScope(OAuthError):
    error = "invalid_scope"


class InvalidTarget(OAuthError):
    # RFC 8693 §2.2.2
    error = "invalid_target"


class AccessDenied(OAuthError):
    # RFC 6749 §4.1.2.1 (an authorization-endpoint code; RFC 8628 §3.5 reuses it at the token
    # endpoint): policy refusals, docs/errors.md says why not RFC 8693's invalid_request
    error = "access_denied"


class InvalidAuthorizationDetails(OAuthError):
    # RFC 9396 §5: authorization_details of an unknown type or asking for too much
    error = "invalid_authorization_details"


class UnsupportedTokenType(OAuthError):
    # RFC 7009 §2.2.1
    error = "unsupported_token_type"


class TemporarilyUnavailable(OAuthError):
    error = "temporarily_unavailable"
    status_code = 503
