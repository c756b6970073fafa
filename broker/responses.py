"""Response helpers: every token-endpoint answer carries ``Cache-Control: no-store``
(RFC 6749 §5.1)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Response

from broker.errors import OAuthError

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def json_response(
    body: dict[str, Any], *, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


#: RFC 9110 §11.6.1: a 401 carries a challenge. A client assertion (RFC 7521 §4.2) travels in
#: the body and no registered HTTP scheme names it, so Writ's challenge for it names its own.
ASSERTION_SCHEME = "Client-Assertion"


def challenge(scheme: str, error: str) -> dict[str, str]:
    """A ``WWW-Authenticate`` field whose ``error`` is the body's (RFC 6750 §3 style);
    RFC 7617 §2: a Basic challenge carries ``realm``."""
    realm = 'realm="writ", ' if scheme.lower() == "basic" else ""
    return {"WWW-Authenticate": f'{scheme} {realm}error="{error}"'}


def oauth_error_response(err: OAuthError) -> Response:
    headers = {**NO_STORE, **err.headers}
    if err.status_code == 401 and "WWW-Authenticate" not in headers:
        # RFC 9110 §15.5.2: every 401 names a challenge
        headers.update(challenge(ASSERTION_SCHEME, err.error))
    return json_response(err.body(), status=err.status_code, headers=headers)
