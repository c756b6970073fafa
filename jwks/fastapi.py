"""FastAPI glue for a downstream service: a dependency that reads the ``Txn-Token`` header,
verifies it in a threadpool and returns ``TxnTokenClaims``.

Not imported by ``jwks/__init__``: the library tier stays free of web frameworks.

    verifier = TxnTokenVerifier(JwksClient(issuer=...), issuer=..., audience="dev.writ.local")
    TxnToken = Annotated[TxnTokenClaims, Depends(txn_token_dependency(verifier))]
    install_txn_token_errors(app)  # optional: RFC 6750 §3 shaped bodies
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from jwks.claims import TxnTokenClaims
from jwks.errors import InvalidToken, JwksFetchError, MissingHeader
from jwks.verifier import TxnTokenVerifier

#: draft-ietf-oauth-transaction-tokens: the HTTP header that carries the Txn-Token.
TXN_TOKEN_HEADER: Final = "Txn-Token"  # noqa: S105


class TxnTokenError(HTTPException):
    """401 (``invalid_token``) or 503 (keys unavailable), with an RFC 6750 §3 style body
    ``{"error": ..., "error_description": ...}`` in ``detail``."""

    def __init__(self, status_code: int, error: str, description: str) -> None:
        headers = {"Cache-Control": "no-store"}
        if status_code == 401:
            # RFC 6750 §3: a 401 names the scheme and the error.
            headers["WWW-Authenticate"] = f'{TXN_TOKEN_HEADER} error="{error}"'
        super().__init__(
            status_code,
            detail={"error": error, "error_description": description},
            headers=headers,
        )


def txn_token_dependency(
    verifier: TxnTokenVerifier, *, header: str = TXN_TOKEN_HEADER
) -> Callable[[Request], Awaitable[TxnTokenClaims]]:
    """A dependency returning the verified claims of the request's one ``header``."""

    async def txn_token(request: Request) -> TxnTokenClaims:
        values = request.headers.getlist(header)
        try:
            if len(values) != 1:
                raise MissingHeader(f"exactly one {header} header is required")
            return await run_in_threadpool(verifier.verify, values[0])
        except InvalidToken as err:
            raise TxnTokenError(401, "invalid_token", err.code) from err
        except JwksFetchError as err:
            raise TxnTokenError(503, "temporarily_unavailable", err.code) from err

    return txn_token


async def _render(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TxnTokenError)
    body: Any = exc.detail
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


def install_txn_token_errors(app: FastAPI) -> None:
    """Render ``TxnTokenError`` as the bare RFC 6750 §3 body instead of ``{"detail": ...}``."""
    app.add_exception_handler(TxnTokenError, _render)
