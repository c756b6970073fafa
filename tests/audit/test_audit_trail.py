"""The tamper-evident audit trail: ``GET /v1/audit`` filters and pages; ``writ audit verify``
names the first record altered, removed or reordered (on SQLite and PostgreSQL);
``writ audit export`` writes JSON lines; registry and key changes leave records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from broker.audit.writer import AuditEvent, AuditWriter, verify_chain
from broker.cli.dev import DEV_AGENT, DEV_GATEWAY, DevTrustDomain
from broker.db import alembic_config
from tests.admin.test_admin_api import bearer, issue, root  # noqa: F401  (fixtures)
from tests.conftest import T0, FrozenClock
from tests.grants.test_token_endpoint import post_token, token_params

BIN = Path(sys.executable).parent
TOOL = "https://tools.example/ledger"
USER = "user:alice@example.com"


def events() -> list[AuditEvent]:
    """Six records: two agents, a user, a tool, two gateways, issues and a denial."""
    a2 = "spiffe://dev.writ.local/agents/other"
    return [
        AuditEvent(kind="token", decision="issued", reason="ok", gateway=DEV_GATEWAY,
                   agent=DEV_AGENT, subject=DEV_AGENT, txn="t1", jti="j1"),
        AuditEvent(kind="token", decision="denied", reason="scope_exceeds_charter",
                   gateway=DEV_GATEWAY, agent=DEV_AGENT, subject=DEV_AGENT),
        AuditEvent(kind="token", decision="issued", reason="ok", gateway=DEV_GATEWAY,
                   agent=a2, subject=USER, tool=TOOL, txn="t2", jti="j2"),
        AuditEvent(kind="token", decision="issued", reason="ok", gateway="spiffe://x/gw",
                   agent=a2, subject=USER, tool=TOOL, txn="t2", jti="j3"),
        AuditEvent(kind="admin", decision="changed", reason="agent.suspended", agent=a2),
        AuditEvent(kind="token", decision="denied", reason="agent_suspended",
                   gateway=DEV_GATEWAY, agent=a2, subject=USER, tool=TOOL),
    ]


def append(engine: Engine, clock: FrozenClock, evs: list[AuditEvent]) -> None:
    writer = AuditWriter(engine, clock=clock)
    writer.start()
    try:
        for e in evs:
            writer.record_sync(e)
            clock.advance(10)
    finally:
        writer.stop()


def seqs(body: dict[str, Any]) -> list[int]:
    return [r["seq"] for r in body["records"]]


# --- GET /v1/audit ---------------------------------------------------------------------


@pytest.mark.parametrize(("query", "expected"), [
    # record 1 is the app's own: its first signing keys were created (keys.created)
    ({}, [1, 2, 3, 4, 5, 6, 7]),
    ({"agent": DEV_AGENT}, [2, 3]),
    ({"subject": USER}, [4, 5, 7]),
    ({"gateway": DEV_GATEWAY}, [2, 3, 4, 7]),
    ({"tool": TOOL}, [4, 5, 7]),
    ({"txn": "t2"}, [4, 5]),
    ({"jti": "j1"}, [2]),
    ({"decision": "denied"}, [3, 7]),
    ({"kind": "admin"}, [6]),
    ({"since": T0 + 20, "until": T0 + 40}, [4, 5]),
    ({"subject": USER, "decision": "issued", "gateway": DEV_GATEWAY}, [4]),
    ({"order": "desc"}, [7, 6, 5, 4, 3, 2, 1]),
], ids=["all", "agent", "user", "gateway", "tool", "txn", "jti", "decision", "kind", "time",
        "combined", "newest-first"])
def test_audit_query_filters(query: dict[str, Any], expected: list[int], client: TestClient,
                             engine: Engine, clock: FrozenClock, root: str) -> None:  # noqa: F811
    append(engine, clock, events())
    r = client.get("/v1/audit", headers=bearer(root), params=query)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    assert seqs(r.json()) == expected


def test_audit_query_pages_by_keyset(client: TestClient, engine: Engine, clock: FrozenClock,
                                     root: str) -> None:  # noqa: F811
    append(engine, clock, events())
    pages, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 4, "gateway": DEV_GATEWAY}
        if cursor is not None:
            params["cursor"] = cursor
        body = client.get("/v1/audit", headers=bearer(root), params=params).json()
        pages.append(seqs(body))
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == [[2, 3, 4, 7]]
    body = client.get("/v1/audit", headers=bearer(root), params={"limit": 2}).json()
    assert seqs(body) == [1, 2] and body["next_cursor"] == 2
    body = client.get("/v1/audit", headers=bearer(root),
                      params={"limit": 2, "cursor": 2}).json()
    assert seqs(body) == [3, 4] and body["next_cursor"] == 4
    desc = client.get("/v1/audit", headers=bearer(root),
                      params={"limit": 2, "cursor": 5, "order": "desc"}).json()
    assert seqs(desc) == [4, 3] and desc["next_cursor"] == 3
    record = client.get("/v1/audit", headers=bearer(root), params={"jti": "j1"}).json()
    assert set(record["records"][0]) == {
        "seq", "at", "kind", "decision", "reason", "gateway", "agent", "subject", "tool",
        "scope", "txn", "jti", "detail", "prev_hash", "hash"}


def test_audit_query_needs_its_scope(client: TestClient, issue: Any) -> None:  # noqa: F811
    r = client.get("/v1/audit", headers=bearer(issue("agents:read")))
    assert r.status_code == 403 and r.json()["error"] == "insufficient_scope"
    bound = issue("audit:read", namespaces=("spiffe://dev.writ.local/agents/demo/**",))
    assert client.get("/v1/audit", headers=bearer(bound)).status_code == 403
    assert client.get("/v1/audit", headers=bearer(bound),
                      params={"agent": "spiffe://dev.writ.local/agents/other"}).status_code == 403
    assert client.get("/v1/audit", headers=bearer(bound),
                      params={"agent": DEV_AGENT}).status_code == 200
    assert client.get("/v1/audit", headers=bearer(issue("audit:read")),
                      params={"limit": 501}).status_code == 422


def test_token_requests_are_found_by_agent_and_txn(client: TestClient, seeded: DevTrustDomain,
                                                   root: str) -> None:  # noqa: F811
    r = post_token(client, token_params(seeded, T0))
    assert r.status_code == 200
    post_token(client, token_params(seeded, T0, scope="demo.read root"))
    body = client.get("/v1/audit", headers=bearer(root),
                      params={"agent": DEV_AGENT, "kind": "token"}).json()
    assert [(x["decision"], x["reason"]) for x in body["records"]] == [
        ("issued", "ok"), ("denied", "scope_exceeds_charter")]
    txn = body["records"][0]["txn"]
    found = client.get("/v1/audit", headers=bearer(root), params={"txn": txn}).json()
    assert seqs(found) == [body["records"][0]["seq"]]


def test_key_creation_and_rotation_are_audited(client: TestClient, engine: Engine,
                                               root: str) -> None:  # noqa: F811
    r = client.post("/v1/keys/rotate", headers=bearer(root), params={"force": "true"})
    assert r.status_code == 200
    reasons = [x["reason"] for x in client.get("/v1/audit", headers=bearer(root),
                                                params={"kind": "key"}).json()["records"]]
    assert reasons[0] == "keys.created"
    rotated = client.get("/v1/audit", headers=bearer(root),
                         params={"order": "desc", "limit": 1}).json()["records"][0]
    assert rotated["reason"] == "keys.rotated"


# --- tampering -------------------------------------------------------------------------


def writ(db_url: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # the tables come from create_all: mark them as migrated, as the CLI reads only those
    command.stamp(alembic_config(db_url), "heads")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WRIT_")}
    env["WRIT_DATABASE_URL"] = db_url
    return subprocess.run([str(BIN / "writ"), *args, "--data-dir", str(cwd)], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def tamper(engine: Engine, *statements: str) -> None:
    with engine.begin() as conn:
        for sql in statements:
            conn.execute(text(sql))


TAMPERING = {
    "update": (["UPDATE audit_records SET reason = 'ok' WHERE seq = 2"],
               2, "record content altered"),
    "update-and-rehash": (
        # a forger who recomputes the altered record's own hash still breaks the next link
        ["UPDATE audit_records SET reason = 'ok', hash = '{h}' WHERE seq = 2"],
        3, "previous-hash link broken"),
    "delete": (["DELETE FROM audit_records WHERE seq = 3"], 3, "record missing or reordered"),
    "swap": (
        ["UPDATE audit_records SET seq = -2 WHERE seq = 2",
         "UPDATE audit_records SET seq = 2 WHERE seq = 3",
         "UPDATE audit_records SET seq = 3 WHERE seq = -2"],
        2, "previous-hash link broken"),
    "truncate": (["DELETE FROM audit_records WHERE seq = 6"], 6,
                 "chain head does not match the last record (truncated)"),
}


@pytest.mark.parametrize("how", list(TAMPERING))
def test_verify_names_the_first_tampered_record(how: str, engine: Engine, db_url: str,
                                                clock: FrozenClock, tmp_path: Path) -> None:
    append(engine, clock, events())
    assert verify_chain(engine).ok
    statements, bad_seq, problem = TAMPERING[how]
    if how == "update-and-rehash":
        from broker.audit.query import AuditFilter, query_audit
        from broker.audit.writer import record_hash

        row = query_audit(engine, AuditFilter(), limit=10).records[1].model_dump()
        forged = record_hash({**row, "reason": "ok"})
        statements = [s.format(h=forged) for s in statements]
    tamper(engine, *statements)
    verdict = verify_chain(engine)
    assert (verdict.ok, verdict.first_bad_seq, verdict.problem) == (False, bad_seq, problem)
    result = writ(db_url, "audit", "verify", cwd=tmp_path)
    assert result.returncode == 1
    assert f"audit chain broken at record {bad_seq}: {problem}" in result.stderr


def test_verify_and_export_of_an_intact_chain(engine: Engine, db_url: str,
                                              clock: FrozenClock, tmp_path: Path) -> None:
    append(engine, clock, events())
    result = writ(db_url, "audit", "verify", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "audit chain intact: 6 records"
    out = tmp_path / "audit.jsonl"
    assert writ(db_url, "audit", "export", "--out", str(out), cwd=tmp_path).returncode == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [x["seq"] for x in lines] == [1, 2, 3, 4, 5, 6]
    assert lines[2]["tool"] == TOOL and lines[0]["prev_hash"] == "0" * 64
    query = writ(db_url, "audit", "query", "--subject", USER, "--limit", "2", cwd=tmp_path)
    assert [json.loads(x)["seq"] for x in query.stdout.splitlines()] == [3, 4]
    assert "more: --cursor 4" in query.stderr


def test_writers_of_two_replicas_share_one_chain(engine: Engine, db_url: str) -> None:
    """Two writers (two replicas) appending at once: each finds the chain moved under it
    and rereads the head under lock, so ``seq`` has no gap and every link holds."""
    import threading

    from broker.db import make_engine

    other_engine = make_engine(db_url)
    writers = [AuditWriter(engine), AuditWriter(other_engine)]
    seqs: list[int] = []
    lock = threading.Lock()

    def work(writer: AuditWriter) -> None:
        for i in range(60):
            seq = writer.record_sync(AuditEvent(kind="token", decision="issued", jti=str(i)))
            with lock:
                seqs.append(seq)

    for w in writers:
        w.start()
    try:
        threads = [threading.Thread(target=work, args=(w,)) for w in writers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        for w in writers:
            w.stop()
        other_engine.dispose()
    assert sorted(seqs) == list(range(1, 121))
    verdict = verify_chain(engine)
    assert verdict.ok and verdict.count == 120


def test_records_of_one_event_loop_turn_share_one_commit(engine: Engine) -> None:
    """Group commit (DESIGN §6): requests reaching their audit step in the same turn of the
    event loop are appended in one transaction, each answered with its own ``seq``."""
    import asyncio

    writer = AuditWriter(engine)
    writer.start()

    async def burst() -> list[int]:
        return await asyncio.gather(*(
            writer.record(AuditEvent(kind="token", decision="issued", jti=str(i)))
            for i in range(20)))

    try:
        got = asyncio.run(burst())
    finally:
        writer.stop()
    assert got == list(range(1, 21))
    assert (writer.batches, writer.records) == (1, 20)
    assert verify_chain(engine).count == 20


class HeadLock:
    """Another replica's transaction holding the chain head's lock: SQLite's write lock
    (``BEGIN IMMEDIATE`` on a connection of its own), or the head row's lock on PostgreSQL."""

    def __init__(self, engine: Engine) -> None:
        from broker.audit.writer import GENESIS

        with engine.begin() as conn:  # the head row of an empty chain, so it can be locked
            conn.execute(text("INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, :h)"),
                         {"h": GENESIS})
        self._conn = engine.raw_connection()
        self._sqlite = engine.dialect.name == "sqlite"

    def take(self) -> None:
        cur = self._conn.cursor()
        if self._sqlite:
            self._conn.driver_connection.isolation_level = None  # type: ignore[union-attr]
            cur.execute("BEGIN IMMEDIATE")
        else:
            cur.execute("SELECT seq FROM audit_head WHERE id = 1 FOR UPDATE")
        cur.close()

    def release(self) -> None:
        if self._sqlite:
            self._conn.cursor().execute("COMMIT")
        else:
            self._conn.commit()

    def close(self) -> None:
        self._conn.close()


def test_a_locked_chain_delays_the_record_but_not_the_event_loop(engine: Engine) -> None:
    """Another process holding the chain head's lock: the writer never waits for it on the
    loop's thread (no SQLite busy handler, PostgreSQL's NOWAIT); it retries while the loop
    goes on serving."""
    import asyncio

    lock = HeadLock(engine)
    writer = AuditWriter(engine, timeout_s=5.0)
    writer.start()

    async def scenario() -> tuple[int, int, int]:
        ticks = 0
        lock.take()
        asyncio.get_running_loop().call_later(0.15, lock.release)
        pending = asyncio.ensure_future(
            writer.record(AuditEvent(kind="token", decision="issued", jti="a")))
        while not pending.done():
            ticks += 1
            await asyncio.sleep(0.001)
        late = await writer.record(AuditEvent(kind="token", decision="issued", jti="b"))
        return pending.result(), late, ticks

    try:
        first, second, ticks = asyncio.run(scenario())
    finally:
        writer.stop()
        lock.close()
    assert (first, second) == (1, 2)
    assert ticks >= 50  # the loop kept turning while the lock was held (about 150 ms)
    assert verify_chain(engine).count == 2


def test_a_lock_held_past_the_audit_timeout_fails_the_record(engine: Engine) -> None:
    """Past ``WRIT_AUDIT_TIMEOUT_S`` the request gets ``AuditUnavailable`` (a 503 on /token)
    and nothing is written; the writer recovers once the lock is released."""
    import asyncio

    from broker.audit.writer import AuditUnavailable

    lock = HeadLock(engine)
    writer = AuditWriter(engine, timeout_s=0.2)
    writer.start()
    try:
        lock.take()
        with pytest.raises(AuditUnavailable):
            asyncio.run(writer.record(AuditEvent(kind="token", decision="issued", jti="lost")))
        with pytest.raises(AuditUnavailable):  # the thread path waits just as long
            writer.record_sync(AuditEvent(kind="admin", decision="changed", jti="lost"))
        lock.release()
        assert asyncio.run(writer.record(AuditEvent(kind="token", decision="issued"))) == 1
    finally:
        writer.stop()
        lock.close()
    verdict = verify_chain(engine)
    assert verdict.ok and verdict.count == 1
    with engine.connect() as conn:
        lost = "SELECT count(*) FROM audit_records WHERE jti = 'lost'"
        assert conn.execute(text(lost)).scalar() == 0
