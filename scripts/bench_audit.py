"""Measure the audit writer alone: what one durable, hash-chained batch costs.

    python scripts/bench_audit.py [--postgres-url URL] [--batches N] [--sizes 1 8 64]
                                  [--ids uuid7|uuid4]

For each backend (SQLite in a temporary file with ``synchronous=FULL``, as Writ runs it; and
PostgreSQL in a database of its own that is created on the given server and dropped
afterwards) and each batch size, it appends ``N`` batches of a typical token record through
``AuditWriter._append``: the code each batch of ``POST /token`` runs, including the commit.
Every record has its own ``txn`` and ``jti`` (``--ids``: UUIDv7 as Writ makes them, or
random UUIDv4).
It reports the CPU time of the process (user + system) and the wall time per batch and per
record. No HTTP and no event loop are involved, so the numbers isolate the writer.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
import uuid
from pathlib import Path

EVENT_DETAIL = {"profile": "autonomous", "intent": "summarise the inbox", "charter_version": 1,
                "token_sha256": "c" * 64, "kid": "d" * 43, "exp": 1_900_000_300}


def measure(url: str, sizes: list[int], batches: int, ids: str = "uuid7") -> list[str]:
    from sqlmodel import SQLModel

    from broker.audit.writer import AuditEvent, AuditHead, AuditRecord, AuditWriter, verify_chain
    from broker.db import make_engine
    from broker.runtime import Broker

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
            # each record its own txn and jti, built beforehand: as Writ makes them (UUIDv7,
            # time-ordered) or random (UUIDv4), to show what the order saves the indexes
            new_id = Broker.new_id if ids == "uuid7" else (lambda: uuid.uuid4().hex)
            work = [[dataclasses.replace(event, txn=new_id(), jti=new_id())
                     for _ in range(size)] for _ in range(batches)]
            cpu, wall = time.process_time(), time.perf_counter()
            for batch in work:
                writer._append(batch)
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
    parser.add_argument("--ids", choices=("uuid7", "uuid4"), default="uuid7",
                        help="txn and jti of the records: uuid7 as Writ makes them, or uuid4")
    args = parser.parse_args(argv)
    rows = ["| backend | records/batch | batches | CPU µs/batch | wall ms/batch "
            "| CPU µs/record | records/s (one writer) |",
            "|---|--:|--:|--:|--:|--:|--:|"]
    with tempfile.TemporaryDirectory(prefix="writ-audit-") as tmp:
        rows += measure(f"sqlite:///{Path(tmp) / 'audit.db'}", args.sizes, args.batches,
                        args.ids)
    if args.postgres_url:
        from sqlalchemy import create_engine, make_url, text

        name = f"writ_audit_{uuid.uuid4().hex[:10]}"
        admin = create_engine(args.postgres_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            url = make_url(args.postgres_url).set(database=name)
            rows += measure(url.render_as_string(hide_password=False), args.sizes,
                            args.batches, args.ids)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
