"""SPIFFE namespace bounds (tests/vectors/namespace_bounds.json): which bounds cover an agent,
what they refuse (exact reason) and how they narrow scopes; the same bounds stored in the
registry (SQLite, and PostgreSQL when configured) and loaded into the snapshot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import Engine
from sqlmodel import Session

from registry import tool_store
from registry.bounds import (
    BoundRefusal,
    BoundView,
    NamespaceBoundRule,
    NamespaceBounds,
    check_bounds,
    narrow_scopes,
)
from registry.errors import NotFound
from registry.snapshot import load_snapshot
from registry.tools import Risk, ToolView, parse_tool_document, tool_view

DATA = json.loads((Path(__file__).parents[1] / "vectors" / "namespace_bounds.json").read_text())


def _bounds() -> NamespaceBounds:
    return NamespaceBounds.of(
        BoundView(b["pattern"], frozenset(b["tags"]), frozenset(b["scopes"]), Risk(b["max_risk"]))
        for b in DATA["bounds"])


def _tool(name: str) -> ToolView:
    spec = DATA["tools"][name]
    return tool_view(parse_tool_document({
        "tool_id": f"https://tools.example/{name}", "name": name,
        "endpoint": f"https://{name}.example/", "audience": name, "scopes": [f"{name}.read"],
        "tags": spec["tags"], "actions": {a: {"risk": r} for a, r in spec["actions"].items()},
    }), source="pinned")


def _check(bounds: NamespaceBounds, v: dict[str, Any]) -> tuple[BoundView, ...]:
    tool = _tool(v["tool"]) if v.get("tool") in DATA["tools"] else None
    scopes = frozenset(v["scopes"]) if "scopes" in v else None
    return check_bounds(bounds, v["agent"], scopes=scopes, tool=tool, action=v.get("action"))


@pytest.mark.parametrize("v", DATA["vectors"], ids=[v["id"] for v in DATA["vectors"]])
def test_bound_vector(v: dict[str, Any]) -> None:
    bounds = _bounds()
    if "reason" in v:
        with pytest.raises(BoundRefusal) as caught:
            _check(bounds, v)
        assert caught.value.reason == v["reason"]
        return
    assert [b.pattern for b in _check(bounds, v)] == v["covering"]


@pytest.mark.parametrize("v", DATA["narrowing"], ids=[v["id"] for v in DATA["narrowing"]])
def test_narrowing(v: dict[str, Any]) -> None:
    bounds = _bounds()
    granted = narrow_scopes(frozenset(v["allowed"]), bounds.covering(v["agent"]))
    assert sorted(granted) == v["granted"]


def test_no_bounds_denies_everyone() -> None:
    with pytest.raises(BoundRefusal) as caught:
        check_bounds(NamespaceBounds(), "spiffe://acme.org/agents/a", scopes=None, tool=None,
                     action=None)
    assert caught.value.reason == "namespace_unbounded"


def test_covering_is_memoised_per_snapshot() -> None:
    bounds = _bounds()
    first = bounds.covering("spiffe://acme.org/agents/payments/payer")
    assert bounds.covering("spiffe://acme.org/agents/payments/payer") is first


@pytest.mark.parametrize("body", [
    {"pattern": "spiffe://acme.org/a**"},
    {"pattern": "https://acme.org/agents/**"},
    {"pattern": "spiffe://acme.org/agents/**", "tags": ["Bad Tag"]},
    {"pattern": "spiffe://acme.org/agents/**", "scopes": ["a b"]},
    {"pattern": "spiffe://acme.org/agents/**", "max_risk": "extreme"},
    {"pattern": "spiffe://acme.org/agents/**", "extra": 1},
], ids=["bad-pattern", "not-spiffe", "bad-tag", "bad-scope", "bad-risk", "unknown-member"])
def test_rule_validation(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        NamespaceBoundRule.model_validate(body)


def test_store_round_trip_and_snapshot(engine: Engine) -> None:
    with Session(engine) as session:
        for b in DATA["bounds"]:
            _, created = tool_store.put_bound(session, NamespaceBoundRule.model_validate(b),
                                              now=1.0, by="test")
            assert created
        session.commit()
        _, created = tool_store.put_bound(session, NamespaceBoundRule(
            pattern="spiffe://beta.org/**", tags=("x",), scopes=("y",), max_risk=Risk.low),
            now=2.0, by="test")
        session.commit()
        assert not created
        shown = tool_store.fetch_bound(session, "spiffe://beta.org/**")
        assert shown is not None
        assert (shown.tags, shown.scopes, shown.max_risk, shown.created_at, shown.updated_at) \
            == (["x"], ["y"], Risk.low, 1.0, 2.0)
        assert [b.pattern for b in tool_store.list_bounds(session)] == sorted(
            b["pattern"] for b in DATA["bounds"])
        snap = load_snapshot(session)
        assert len(snap.bounds) == len(DATA["bounds"])
        covering = snap.bounds.covering("spiffe://acme.org/agents/payments/payer")
        assert [b.pattern for b in covering] == ["spiffe://acme.org/agents/**",
                                                 "spiffe://acme.org/agents/payments/**"]
        tool_store.delete_bound(session, "spiffe://beta.org/**")
        session.commit()
        with pytest.raises(NotFound):
            tool_store.delete_bound(session, "spiffe://beta.org/**")
        remaining = {b.pattern for b in load_snapshot(session).bounds.rules}
        assert "spiffe://beta.org/**" not in remaining
