"""The one SPIFFE ID parser (jwks.spiffe_id), driven by tests/vectors/spiffe_ids.json: the
SPIFFE standards' examples, py-spiffe's own vectors and Writ's hostile forms."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from jwks.errors import InvalidPattern, InvalidSpiffeId
from jwks.patterns import SpiffePattern
from jwks.spiffe_id import (
    MAX_ID_BYTES,
    MAX_TRUST_DOMAIN_BYTES,
    SpiffeId,
    is_spiffe_id,
    parse_spiffe_id,
    parse_trust_domain,
)

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "spiffe_ids.json").read_text())


def built(v: dict[str, Any]) -> str:
    b = v["build"]
    return str(b["prefix"] + b["repeat"] * b["times"] + b["suffix"])


@pytest.mark.parametrize("v", VECTORS["valid"], ids=[v["id"] for v in VECTORS["valid"]])
def test_valid(v: dict[str, str]) -> None:
    sid = parse_spiffe_id(v["value"])
    assert (sid.trust_domain, sid.path) == (v["trust_domain"], v["path"])
    assert str(sid) == v["value"]
    assert is_spiffe_id(v["value"]) is True
    assert sid.segments == tuple(s for s in v["path"].split("/") if s)


@pytest.mark.parametrize("v", VECTORS["invalid"], ids=[v["id"] for v in VECTORS["invalid"]])
def test_invalid(v: dict[str, str]) -> None:
    with pytest.raises(InvalidSpiffeId) as info:
        parse_spiffe_id(v["value"])
    message = str(info.value)
    assert v["error"] in message
    assert message.startswith(("malformed SPIFFE ID: ", "SPIFFE ID is not in canonical ("))
    # the value is never echoed (it may hold control characters)
    assert v["value"] not in message or not v["value"]
    assert is_spiffe_id(v["value"]) is False
    if "*" not in v["value"]:  # nor a pattern ('*' is a pattern's wildcard segment)
        with pytest.raises(InvalidPattern):
            SpiffePattern.parse(v["value"])


@pytest.mark.parametrize("v", VECTORS["long"], ids=[v["id"] for v in VECTORS["long"]])
def test_length_bounds(v: dict[str, Any]) -> None:
    value = built(v)
    if v["valid"]:
        assert str(parse_spiffe_id(value)) == value
    else:
        with pytest.raises(InvalidSpiffeId, match=v["error"]):
            parse_spiffe_id(value)


def test_bounds_are_the_standards() -> None:
    assert (MAX_ID_BYTES, MAX_TRUST_DOMAIN_BYTES) == (2048, 255)
    assert len(built(VECTORS["long"][3])) == 2048


def test_vector_ids_are_unique_and_cover_both_sources() -> None:
    entries = VECTORS["valid"] + VECTORS["invalid"] + VECTORS["long"]
    ids = [v["id"] for v in entries]
    assert len(ids) == len(set(ids))
    sources = {v["source"].split(" ")[0] for v in entries}
    assert {"SPIFFE-ID", "SPIFFE", "py-spiffe", "Writ"} <= sources


@pytest.mark.parametrize("value", [None, 42, b"spiffe://example.org/a", ["spiffe://a/b"]])
def test_non_strings_refused(value: Any) -> None:
    with pytest.raises(InvalidSpiffeId, match="not a string"):
        parse_spiffe_id(value)
    assert is_spiffe_id(value) is False


@pytest.mark.parametrize(("name", "error"), [
    ("example.org", None), ("a", None), ("a" * 255, None),
    ("", "empty"), ("a" * 256, "longer than 255"), ("Example.org", "lowercase"),
    ("example.org\n", "control character"), ("example.org:443", "port"),
    ("spiffe://example.org", "port"), ("exämple.org", "non-ASCII"), ("a/b", "may hold only"),
])
def test_trust_domain(name: str, error: str | None) -> None:
    if error is None:
        assert parse_trust_domain(name) == name
    else:
        with pytest.raises(InvalidSpiffeId, match=error):
            parse_trust_domain(name)


def test_value_is_frozen_and_prints_canonically() -> None:
    sid = parse_spiffe_id("spiffe://example.org/a/b")
    assert sid == SpiffeId("example.org", "/a/b")
    with pytest.raises(AttributeError):
        sid.path = "/c"  # type: ignore[misc]
    assert parse_spiffe_id("spiffe://example.org").segments == ()


def test_jwks_loads_no_pyspiffe_grpc_or_protobuf() -> None:
    # the verifier installs alone: importing it must not load the Workload API stack
    code = (
        "import sys, jwks, jwks.spiffe_id, jwks.jose, jwks.verifier, jwks.patterns;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('spiffe', 'grpc', 'google', 'fastapi', 'starlette'));"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True,
                         text=True, check=True, cwd=Path(__file__).parents[2])
    assert out.stdout.strip() == "[]"
    assert out.stderr == ""
