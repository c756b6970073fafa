"""The ``Authorization`` request header and the one client authentication method of a
request. Pure: no I/O, no web framework.

RFC 9110 §11.6.2: ``Authorization = credentials``, ``credentials = auth-scheme [ 1*SP (
token68 / #auth-param ) ]``. Writ reads only token68 credentials (RFC 6750 §2.1 Bearer,
RFC 7617 Basic), so one header, one scheme token, one space and one token68 is the whole
grammar: anything else (a second header, odd spacing, empty credentials, non-ASCII) is
malformed and refused, never guessed at.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from broker.errors import InvalidRequest

# RFC 9110 §5.6.2 token, bounded: the scheme may be echoed in a challenge (RFC 6749 §5.2)
_SCHEME: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}")
# RFC 9110 §11.2 token68
_TOKEN68: Final = re.compile(r"[A-Za-z0-9._~+/-]+=*")
#: Parameters that authenticate a client in the body (RFC 6749 §2.3.1, RFC 7521 §4.2).
SECRET_PARAMS: Final = ("client_secret",)
ASSERTION_PARAMS: Final = ("client_assertion", "client_assertion_type")


class MalformedAuthorization(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Credentials:
    scheme: str  # as sent; compare with ``is_scheme`` (RFC 9110 §11.1: case-insensitive)
    credentials: str

    def is_scheme(self, name: str) -> bool:
        return self.scheme.lower() == name.lower()


def parse_authorization(values: str | Sequence[str] | None) -> Credentials | None:
    """The one ``Authorization`` header of a request, or None when there is none.

    ``values`` are every ``Authorization`` field of the request, in order (a single string
    is one field). Raises ``MalformedAuthorization`` naming what is wrong.
    """
    fields = [values] if isinstance(values, str) else list(values or ())
    if not fields:
        return None
    if len(fields) > 1:
        raise MalformedAuthorization("authorization_repeated")
    value = fields[0]
    if not value.isascii() or not value.isprintable():
        raise MalformedAuthorization("authorization_bad_characters")
    scheme, space, credentials = value.partition(" ")
    if not _SCHEME.fullmatch(scheme):
        raise MalformedAuthorization("authorization_malformed")
    if not space or not credentials:
        raise MalformedAuthorization("authorization_empty")
    if not _TOKEN68.fullmatch(credentials):
        # a second space, a trailing space, a comma-separated parameter list ...
        raise MalformedAuthorization("authorization_malformed")
    return Credentials(scheme, credentials)


def body_methods(params: Mapping[str, str]) -> list[str]:
    """The client authentication methods a request body carries."""
    methods = []
    if any(p in params for p in SECRET_PARAMS):
        methods.append("client_secret_post")
    if any(p in params for p in ASSERTION_PARAMS):
        methods.append("client_assertion")
    return methods


def require_one_method(header: Credentials | None, params: Mapping[str, str]) -> None:
    """RFC 6749 §2.3: "The client MUST NOT use more than one authentication method in each
    request"; §5.2 names a request that "utilizes more than one mechanism for
    authenticating the client" ``invalid_request``."""
    methods = body_methods(params)
    if header is not None:
        methods.append(header.scheme)
    if len(methods) > 1:
        raise InvalidRequest("more than one client authentication method",
                             reason="multiple_client_auth_methods")
