"""The bounds index (registry/bounds.py) answers exactly what a scan of every pattern would,
and a bound added or removed as a delta gives the same answers as an index built anew."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from jwks.patterns import SpiffePattern
from registry.bounds import BoundView, NamespaceBounds
from registry.tools import Risk

SEGMENTS = ["agents", "a", "b", "ab", "payments", "x"]
DOMAINS = ["acme.org", "other.org"]

segment = st.sampled_from(SEGMENTS)
pattern = st.builds(
    lambda td, segs, star, subtree: "spiffe://" + td + "".join(
        f"/{'*' if i == star else s}" for i, s in enumerate(segs)) + ("/**" if subtree else ""),
    st.sampled_from(DOMAINS), st.lists(segment, min_size=1, max_size=4),
    st.integers(min_value=-1, max_value=3), st.booleans())
agent = st.builds(lambda td, segs: "spiffe://" + td + "".join(f"/{s}" for s in segs),
                  st.sampled_from(DOMAINS), st.lists(segment, min_size=1, max_size=5))


def view(p: str) -> BoundView:
    return BoundView(p, frozenset({"t"}), frozenset({"s"}), Risk.low)


def scan(patterns: set[str], spiffe_id: str) -> list[str]:
    return sorted(p for p in patterns if SpiffePattern.parse(p).matches(spiffe_id))


@settings(max_examples=300, deadline=None)
@given(st.sets(pattern, max_size=25), st.lists(agent, min_size=1, max_size=10))
def test_index_answers_as_a_scan_would(patterns: set[str], agents: list[str]) -> None:
    bounds = NamespaceBounds.of(view(p) for p in patterns)
    for a in agents:
        assert [b.pattern for b in bounds.covering(a)] == scan(patterns, a)


@settings(max_examples=200, deadline=None)
@given(st.sets(pattern, max_size=20), st.lists(st.tuples(st.booleans(), pattern), max_size=15),
       st.lists(agent, min_size=1, max_size=8))
def test_deltas_match_a_rebuild(patterns: set[str], changes: list[tuple[bool, str]],
                                agents: list[str]) -> None:
    bounds = NamespaceBounds.of(view(p) for p in patterns)
    before = {a: bounds.covering(a) for a in agents}
    current = set(patterns)
    for add, p in changes:
        bounds = bounds.with_bound(view(p)) if add else bounds.without(p)
        (current.add if add else current.discard)(p)
    rebuilt = NamespaceBounds.of(view(p) for p in current)
    assert len(bounds) == len(current)
    assert [b.pattern for b in bounds.rules] == sorted(current)
    for a in agents:
        assert [b.pattern for b in bounds.covering(a)] == scan(current, a)
        assert bounds.covering(a) == rebuilt.covering(a)
    # the original is untouched: a change makes a copy
    for a in agents:
        assert [b.pattern for b in before[a]] == scan(patterns, a)


def test_replacing_a_bound_keeps_one_entry() -> None:
    p = "spiffe://acme.org/agents/**"
    first = NamespaceBounds.of([view(p)])
    wider = BoundView(p, frozenset({"*"}), frozenset({"*"}), Risk.high)
    second = first.with_bound(wider)
    assert second.covering("spiffe://acme.org/agents/a") == (wider,)
    assert first.covering("spiffe://acme.org/agents/a") == (view(p),)
    assert len(second) == 1
