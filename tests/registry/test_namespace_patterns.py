"""registry.namespace over the SPIFFE ID matcher of jwks.patterns, driven by the same vectors
(tests/jwks/test_patterns.py drives the matcher alone)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from registry.namespace import pattern_within, within

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "spiffe_patterns.json").read_text())


@pytest.mark.parametrize("v", VECTORS, ids=[v["id"] for v in VECTORS])
def test_within_follows_the_matcher(v: dict[str, object]) -> None:
    assert within(str(v["id_"]), (str(v["pattern"]),)) is v["match"]


def test_deny_by_default_and_coverage() -> None:
    assert within("spiffe://acme.org/agents/a", ()) is False
    assert pattern_within("spiffe://acme.org/agents/a/**", ("spiffe://acme.org/agents/**",))
    assert not pattern_within("spiffe://acme.org/agents/**", ("spiffe://acme.org/agents/a/**",))
    assert not pattern_within("spiffe://acme.org/x", ("spiffe://other.org/**",))
