"""The one SPIFFE ID matcher (jwks.patterns), driven by vectors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jwks.patterns import InvalidPattern, SpiffePattern, parse_spiffe_id

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "spiffe_patterns.json").read_text())


@pytest.mark.parametrize("v", VECTORS, ids=[v["id"] for v in VECTORS])
def test_matching(v: dict[str, object]) -> None:
    assert SpiffePattern.parse(str(v["pattern"])).matches(str(v["id_"])) is v["match"]


@pytest.mark.parametrize("bad", [
    "http://acme.org/a", "spiffe://acme.org/a**", "spiffe://acme.org/a/**/b",
    "spiffe://ACME.org/a", "spiffe://acme.org//a", "spiffe://acme.org/a/../b",
    "spiffe://acme.org/a b", "spiffe://", "",
])
def test_malformed_patterns_refused(bad: str) -> None:
    with pytest.raises(InvalidPattern):
        SpiffePattern.parse(bad)


@pytest.mark.parametrize("bad", ["spiffe://acme.org/x/", "spiffe://acme.org/%41",
                                 "spiffe://acme.org:443/x", "spiffe://user@acme.org/x"])
def test_spiffe_id_strict(bad: str) -> None:
    with pytest.raises(InvalidPattern):
        parse_spiffe_id(bad)
