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


def oauth_error_response(err: OAuthError) -> Response:
    return json_response(err.body(), status=err.status_code, headers={**NO_STORE, **err.headers})
