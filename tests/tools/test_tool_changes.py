"""Tool metadata refresh is not a silent redirect (docs/tools.md): the diff of two documents
for every member (tests/vectors/tool_changes.json), the refresh that holds a
security-relevant change while the previous document keeps serving, its audit and metric,
and approval through ``POST /v1/tools/{id}/approve-change`` and ``writ tools approve-change``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import typer
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from broker.audit.writer import AuditRecord
from broker.cli.admin import register as register_admin
from broker.cli.tools import register as register_tools
from broker.tools.fetch import Fetched
from broker.tools.refresh import ToolRefresher, refresh_tool
from registry import tool_store
from registry.errors import Conflict, NotFound
from registry.snapshot import SnapshotHolder, load_snapshot
from registry.tool_changes import ToolChange, security_changes
from registry.tool_store import FetchTimes, ToolSource
from registry.tools import ToolDocument, parse_tool_document
from tests.admin.test_admin_api import bearer, issue, root  # noqa: F401  (fixtures)
from tests.cli.test_cli_admin import Writ, data_dir  # noqa: F401  (fixture)
from tests.conftest import FrozenClock

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "tool_changes.json").read_text())
BASE: dict[str, Any] = VECTORS["base"]
TOOL = BASE["tool_id"]


def _doc(base: dict[str, Any], change: dict[str, Any]) -> ToolDocument:
    return parse_tool_document({**base, **change})


# --- the diff, member by member --------------------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=[v["id"] for v in VECTORS["vectors"]])
def test_changes(vector: dict[str, Any]) -> None:
    new = _doc(BASE, vector["change"])
    assert [c.value for c in security_changes(_doc(BASE, {}), new)] == vector["changes"]


@pytest.mark.parametrize("vector", VECTORS["upstream_vectors"],
                         ids=[v["id"] for v in VECTORS["upstream_vectors"]])
def test_upstream_changes(vector: dict[str, Any]) -> None:
    base = VECTORS["upstream_base"]
    assert [c.value for c in security_changes(_doc(base, {}), _doc(base, vector["change"]))] \
        == vector["changes"]


def test_every_member_has_a_decision() -> None:
    """A member added to the document must be classified: each one is changed by a vector."""
    changed = {k for v in (*VECTORS["vectors"], *VECTORS["upstream_vectors"])
               for k in v["change"]}
    assert set(ToolDocument.model_fields) - {"tool_id"} <= changed
    # and every change kind is reachable from some vector
    reported = {c for v in (*VECTORS["vectors"], *VECTORS["upstream_vectors"])
                for c in v["changes"]}
    assert reported == {c.value for c in ToolChange} - {ToolChange.previous_unreadable}


# --- the refresh ---------------------------------------------------------------------------------


class StubFetcher:
    """What the metadata host answers next."""

    def __init__(self) -> None:
        self.document: dict[str, Any] = BASE
        self.now = 1000.0

    def fetch(self, url: str) -> Fetched:
        return Fetched(parse_tool_document(self.document, url=url),
                       FetchTimes(fetched_at=self.now, fresh_until=self.now + 60,
                                  usable_until=self.now + 360))


def held_count(change: str) -> float:
    return REGISTRY.get_sample_value("writ_tool_changes_held_total", {"change": change}) or 0.0


@pytest.fixture
def fetched(engine: Engine) -> StubFetcher:
    stub = StubFetcher()
    with Session(engine) as s:
        tool_store.create_tool(s, parse_tool_document(BASE), source=ToolSource.url,
                               times=stub.fetch(TOOL).times, now=stub.now, by="test")
        s.commit()
    return stub


def _refresh(engine: Engine, stub: StubFetcher, change: dict[str, Any]) -> Any:
    stub.document = {**BASE, **change}
    stub.now += 50
    return refresh_tool(engine, stub, TOOL, now=stub.now)  # type: ignore[arg-type]


def _served(engine: Engine) -> Any:
    with Session(engine) as s:
        return load_snapshot(s).tools[TOOL]


@pytest.mark.parametrize("vector", [v for v in VECTORS["vectors"] if v["changes"]],
                         ids=[v["id"] for v in VECTORS["vectors"] if v["changes"]])
def test_a_security_relevant_change_is_held(vector: dict[str, Any], engine: Engine,
                                            fetched: StubFetcher) -> None:
    before = {c: held_count(c) for c in vector["changes"]}
    result = _refresh(engine, fetched, vector["change"])
    assert result.held == tuple(vector["changes"])
    tool = result.tool
    # the previous document keeps serving, with its times moved on (its host answered)
    assert tool.document == parse_tool_document(BASE).model_dump(mode="json")
    assert tool.document_hash == result.previous_hash
    assert (tool.fetched_at, tool.usable_until) == (fetched.now, fetched.now + 360)
    assert tool.pending_document == _doc(BASE, vector["change"]).model_dump(mode="json")
    assert (tool.pending_changes, tool.pending_since) == (vector["changes"], fetched.now)
    assert _served(engine).document_hash == result.previous_hash
    assert {c: held_count(c) - before[c] for c in vector["changes"]} == {
        c: 1.0 for c in vector["changes"]}
    # fetched again unchanged: still held, not counted twice
    again = _refresh(engine, fetched, vector["change"])
    assert again.held == () and again.tool.pending_hash == tool.pending_hash
    assert again.tool.pending_since == tool.pending_since
    assert {c: held_count(c) - before[c] for c in vector["changes"]} == {
        c: 1.0 for c in vector["changes"]}


@pytest.mark.parametrize("vector", [v for v in VECTORS["vectors"] if not v["changes"]],
                         ids=[v["id"] for v in VECTORS["vectors"] if not v["changes"]])
def test_a_harmless_change_is_adopted(vector: dict[str, Any], engine: Engine,
                                      fetched: StubFetcher) -> None:
    result = _refresh(engine, fetched, vector["change"])
    assert result.held == ()
    assert result.tool.document == _doc(BASE, vector["change"]).model_dump(mode="json")
    assert result.tool.pending_hash is None
    assert _served(engine).document_hash == result.tool.document_hash


def test_approval_adopts_exactly_the_held_document(engine: Engine,
                                                   fetched: StubFetcher) -> None:
    held = _refresh(engine, fetched, {"endpoint": "https://evil.test/api"}).tool
    # a different change replaces the held one
    other = _refresh(engine, fetched, {"audience": "https://evil.test"}).tool
    assert other.pending_changes == ["audience"] and other.pending_hash != held.pending_hash
    with Session(engine) as s:
        with pytest.raises(Conflict, match="is not"):
            tool_store.approve_tool_change(s, TOOL, expected_hash=held.pending_hash, now=1.0)
        with pytest.raises(NotFound):
            tool_store.approve_tool_change(s, TOOL + "x", expected_hash=None, now=1.0)
        before, tool = tool_store.approve_tool_change(s, TOOL, expected_hash=other.pending_hash,
                                                      now=1.0)
        s.commit()
    assert before == held.document_hash
    assert tool.document["audience"] == "https://evil.test" and tool.pending_hash is None
    assert _served(engine).audience == "https://evil.test"
    with Session(engine) as s, pytest.raises(Conflict, match="no change pending"):
        tool_store.approve_tool_change(s, TOOL, expected_hash=None, now=1.0)


def test_the_host_going_back_clears_the_held_change(engine: Engine,
                                                    fetched: StubFetcher) -> None:
    assert _refresh(engine, fetched, {"endpoint": "https://evil.test/api"}).held
    back = _refresh(engine, fetched, {"description": "as before, reworded"})
    assert back.held == () and back.tool.pending_hash is None
    assert back.tool.document["description"] == "as before, reworded"


def test_an_unreadable_document_in_force_holds_any_fetch(engine: Engine,
                                                         fetched: StubFetcher) -> None:
    from registry.tool_store import ToolRecord

    with Session(engine) as s:  # stored under looser rules than today's
        row = s.get(ToolRecord, TOOL)
        assert row is not None
        row.document = {**BASE, "retired_member": 1}
        s.add(row)
        s.commit()
    result = _refresh(engine, fetched, {"description": "harmless on its own"})
    assert result.held == ("previous_unreadable",)
    assert result.tool.document == {**BASE, "retired_member": 1}


def test_the_refresher_audits_a_held_change_once(engine: Engine, fetched: StubFetcher) -> None:
    holder = SnapshotHolder(engine)
    holder.refresh(force=True)
    held: list[tuple[str, str, tuple[str, ...]]] = []
    changed: list[str] = []
    refresher = ToolRefresher(engine, fetched, holder,  # type: ignore[arg-type]
                              clock=lambda: fetched.now, on_held=lambda *a: held.append(a),
                              on_changed=lambda t, b, a: changed.append(t))
    fetched.document = {**BASE, "endpoint": "https://evil.test/api"}
    fetched.now += 100
    assert refresher.run_once() == [TOOL]
    fetched.now += 100
    assert refresher.run_once() == [TOOL]
    assert len(held) == 1 and held[0][0] == TOOL and held[0][2] == ("endpoint",)
    assert changed == []
    assert holder.current.tools[TOOL].endpoint == BASE["endpoint"]
    assert holder.current.tools[TOOL].usable(fetched.now)  # kept fresh while held


# --- the admin API and the CLI ---------------------------------------------------------------


def test_admin_approve_change(client: TestClient, engine: Engine, clock: FrozenClock,
                              issue: Any, root: str) -> None:  # noqa: F811
    stub = StubFetcher()
    with Session(engine) as s:
        tool_store.create_tool(s, parse_tool_document(BASE), source=ToolSource.url,
                               times=stub.fetch(TOOL).times, now=clock(), by="test")
        tool, _ = tool_store.hold_tool_change(
            s, TOOL, _doc(BASE, {"endpoint": "https://evil.test/api"}), ["endpoint"],
            times=stub.fetch(TOOL).times, now=clock())
        s.commit()
    broker = client.app.state.broker  # type: ignore[attr-defined]
    broker.snapshots.refresh()
    path = f"/v1/tools/{quote(TOOL, safe='')}/approve-change"
    h = bearer(root)
    shown = client.get(f"/v1/tools/{quote(TOOL, safe='')}", headers=h).json()
    assert (shown["pending_hash"], shown["pending_changes"]) == (tool.pending_hash, ["endpoint"])
    for body, status, error in (
            ({"pending_hash": "sha-256:00"}, 409, "conflict"),
            ({"pending_hash": tool.pending_hash, "force": True}, 422, "invalid_request")):
        r = client.post(path, headers=h, json=body)
        assert (r.status_code, r.json()["error"]) == (status, error), r.text
    bound = issue("tools:write", namespaces=("spiffe://dev.writ.local/agents/**",))
    r = client.post(path, headers=bearer(bound), json={})
    assert r.status_code == 403
    assert client.post(path, json={}).status_code == 401
    assert broker.snapshot.tools[TOOL].endpoint == BASE["endpoint"]
    r = client.post(path, headers=h, json={"pending_hash": tool.pending_hash})
    assert r.status_code == 200, r.text
    assert r.json()["document"]["endpoint"] == "https://evil.test/api"
    assert r.json()["pending_hash"] is None
    assert broker.snapshot.tools[TOOL].endpoint == "https://evil.test/api"
    r = client.post(path, headers=h, json={})
    assert (r.status_code, r.json()["error"]) == (409, "conflict")
    r = client.post(f"/v1/tools/{quote(TOOL + 'x', safe='')}/approve-change", headers=h,
                    json={})
    assert r.status_code == 404
    with Session(engine) as s:
        rows = list(s.exec(select(AuditRecord).where(
            col(AuditRecord.reason) == "tool.change_approved")))
    assert len(rows) == 1
    assert rows[0].detail["changes"] == ["endpoint"]
    assert rows[0].detail["previous_hash"] == tool.document_hash


def test_cli_approve_change(data_dir: Path) -> None:  # noqa: F811
    app = typer.Typer()
    register_admin(app)
    register_tools(app)
    writ = Writ(app, data_dir)
    writ.ok("tools", "list")  # creates and migrates the local database
    from broker.db import make_engine

    engine = make_engine(f"sqlite:///{data_dir / 'writ.db'}")
    stub = StubFetcher()
    try:
        with Session(engine) as s:
            tool_store.create_tool(s, parse_tool_document(BASE), source=ToolSource.url,
                                   times=stub.fetch(TOOL).times, now=stub.now, by="test")
            tool, _ = tool_store.hold_tool_change(
                s, TOOL, _doc(BASE, {"scopes": ["mail.admin"]}), ["scopes_widened"],
                times=stub.fetch(TOOL).times, now=stub.now)
            s.commit()
    finally:
        engine.dispose()
    writ.fails("tools", "approve-change", TOOL, "--pending-hash", "sha-256:00",
               message=f"the change pending for {TOOL} is not sha-256:00")
    approved = writ.json("tools", "approve-change", TOOL, "--pending-hash",
                         str(tool.pending_hash))
    assert approved["document"]["scopes"] == ["mail.admin"]
    assert approved["pending_hash"] is None
    writ.fails("tools", "approve-change", TOOL, message=f"tool {TOOL} has no change pending")
    writ.fails("tools", "approve-change", TOOL + "x", message=f"no tool {TOOL}x")
    assert [(reason, detail.get("changes")) for reason, _, _, detail in writ.audit()] == [
        ("tool.change_approved", ["scopes_widened"])]
