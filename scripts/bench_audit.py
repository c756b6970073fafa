"""Measure the audit writer alone: what one durable, hash-chained batch costs.

    python scripts/bench_audit.py [--postgres-url URL] [--batches N] [--sizes 1 8 64]

For each backend (SQLite in a temporary file with ``synchronous=FULL``, as Writ runs it; and
PostgreSQL in a database of its own that is created on the given server and dropped
afterwards) and each batch size, it appends ``N`` batches of a typical token record through
``AuditWriter._append``: the code each batch of ``POST /token`` runs, including the commit.
It reports the CPU time of the process (user + system) and the wall time per batch and per
record. No HTTP and no event loop are involved, so the numbers isolate the writer.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

EVENT_DETAIL = {"profile": "autonomous", "intent": "summarise the inbox", "charter_version": 1,
                "token_sha256": "c" * 64, "kid": "d" * 43, "exp": 1_900_000_300}


def measure(url: str, sizes: list[int], batches: int) -> list[str]:
    from sqlmodel import SQLModel

    from broker.audit import AuditEvent, AuditHead, AuditRecord, AuditWriter, verify_chain
    from broker.db import make_engine

    engine = make_engine(url)
    SQLModel.metadata.create_all(engine, tables=[AuditRecord.__table__,  # type: ignore[attr-defined]
                                                 AuditHead.__table__])  # type: ignore[attr-defined]
    writer = AuditWriter(engine)
    event = AuditEvent(kind="token", decision="issued", reason="ok",
                       gateway="spiffe://dev.writ.local/gateway/demo",
                       agent="spiffe://dev.writ.local/agents/demo/assistant",
                       subject="spiffe://dev.writ.local/agents/demo/assistant", scope="demo.read",
                       txn=uuid.uuid4().hex, jti=uuid.uuid4().hex, detail=EVENT_DETAIL)
    lines = []
    try:
        writer._append([event])  # connect outside the timing
        for size in sizes:
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(batches):
                writer._append([event] * size)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            lines.append(f"| {engine.dialect.name} | {size} | {batches} "
                         f"| {cpu / batches * 1e6:,.0f} | {wall / batches * 1e3:.2f} "
                         f"| {cpu / (batches * size) * 1e6:,.0f} "
                         f"| {batches * size / wall:,.0f} |")
        verdict = verify_chain(engine)
        if not verdict.ok:
            raise RuntimeError(f"chain broken: {verdict}")
    finally:
        writer._close_connection()
        engine.dispose()
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres-url", default=None,
                        help="a PostgreSQL server URL; a database of its own is created there")
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 8, 64])
    args = parser.parse_args(argv)
    rows = ["| backend | records/batch | batches | CPU µs/batch | wall ms/batch "
            "| CPU µs/record | records/s (one writer) |",
            "|---|--:|--:|--:|--:|--:|--:|"]
    with tempfile.TemporaryDirectory(prefix="writ-audit-") as tmp:
        rows += measure(f"sqlite:///{Path(tmp) / 'audit.db'}", args.sizes, args.batches)
    if args.postgres_url:
        from sqlalchemy import create_engine, make_url, text

        name = f"writ_audit_{uuid.uuid4().hex[:10]}"
        admin = create_engine(args.postgres_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            url = make_url(args.postgres_url).set(database=name)
            rows += measure(url.render_as_string(hide_password=False), args.sizes, args.batches)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
