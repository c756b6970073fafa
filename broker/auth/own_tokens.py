"""Verifying Writ's own Txn-Tokens inside Writ (a parent presented for replacement).

The keys are the ones Writ publishes at ``/.well-known/jwks.json`` (active, next and
still-published retired keys), taken from the key ring in memory: no HTTP, no database.
The verifier is the ``jwks`` library's, so Writ checks a parent exactly as a downstream
service would.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Protocol

from broker.signing.keyring import PublishedJwks
from jwks.claims import TxnTokenClaims
from jwks.client import StaticKeys
from jwks.verifier import TxnTokenVerifier


class PublishesJwks(Protocol):
    def published(self) -> PublishedJwks: ...


class OwnTxnTokens:
    """``verify(token)`` for Txn-Tokens this Writ (any replica) signed; raises the
    ``jwks.errors.InvalidToken`` family."""

    def __init__(
        self,
        keyring: PublishesJwks,
        *,
        issuer: str,
        audience: str,
        max_token_bytes: int = 16384,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keyring = keyring
        self._issuer = issuer
        self._audience = audience
        self._max_bytes = max_token_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._etag: str | None = None
        self._verifier: TxnTokenVerifier | None = None

    def verify(self, token: str) -> TxnTokenClaims:
        return self._current().verify(token)

    def _current(self) -> TxnTokenVerifier:
        published = self._keyring.published()
        verifier = self._verifier
        if verifier is not None and published.etag == self._etag:
            return verifier
        with self._lock:
            if self._verifier is None or published.etag != self._etag:
                self._verifier = TxnTokenVerifier(
                    StaticKeys(json.loads(published.body)),
                    issuer=self._issuer,
                    audience=self._audience,
                    # an expired parent is never replaced (DESIGN §2): no leeway
                    leeway_s=0,
                    max_token_bytes=self._max_bytes,
                    clock=self._clock,
                )
                self._etag = published.etag
            return self._verifier
