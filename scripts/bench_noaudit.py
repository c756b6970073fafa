"""Bench only: Writ whose audit writer records nothing, so ``scripts/bench_token.py --audit
off`` can measure what the durable, hash-chained audit record costs ``POST /token``.

This module is not part of the installed package and no setting of Writ reaches it: it is
loaded only by ``uvicorn --factory bench_noaudit:create --app-dir scripts``, which the bench
script runs. Never deploy it: a Writ built here returns tokens that leave no audit record.
"""

from __future__ import annotations

from fastapi import FastAPI

import broker.runtime
from broker.audit.writer import AuditEvent, AuditWriter


class NoAuditWriter(AuditWriter):
    """Answers at once as if the record were durable, and writes nothing."""

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None

    async def record(self, event: AuditEvent) -> int:
        return 0

    def record_sync(self, event: AuditEvent) -> int:
        return 0


def create() -> FastAPI:
    broker.runtime.AuditWriter = NoAuditWriter  # type: ignore[misc]
    from broker.asgi import create as create_writ

    return create_writ()
