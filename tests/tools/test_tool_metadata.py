"""Tool metadata rules, driven by vectors: tool URLs (tests/vectors/tool_urls.json),
documents (tool_documents.json) and the special-use addresses a fetch may never reach
(ssrf_addresses.json). Each vector asserts the exact reason."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from broker.tools.addresses import AddressPolicy, BlockedAddress, parse_address
from broker.tools.fetch import cache_lifetime_s
from broker.tools.settings import ToolSettings
from registry.tools import (
    Risk,
    ToolError,
    check_tool_url,
    decode_tool_document,
    document_hash,
    parse_tool_document,
    tool_view,
    unmet_chain_requirements,
)

VECTORS = Path(__file__).parents[1] / "vectors"
URLS = json.loads((VECTORS / "tool_urls.json").read_text())
DOCS = json.loads((VECTORS / "tool_documents.json").read_text())
ADDRESSES = json.loads((VECTORS / "ssrf_addresses.json").read_text())


@pytest.mark.parametrize("v", URLS, ids=[v["id"] for v in URLS])
def test_tool_url(v: dict[str, Any]) -> None:
    if v.get("ok"):
        assert check_tool_url(v["url"]) == v["url"]
        return
    with pytest.raises(ToolError) as caught:
        check_tool_url(v["url"])
    assert caught.value.reason == v["reason"]


def test_tool_url_length_is_bounded() -> None:
    with pytest.raises(ToolError) as caught:
        check_tool_url("https://tools.example/" + "a" * 2040)
    assert caught.value.reason == "url_malformed"


def _document(v: dict[str, Any]) -> Any:
    if "document" in v:
        return v["document"]
    doc = copy.deepcopy(v.get("replace", DOCS["base"]))
    doc.update(copy.deepcopy(v.get("set", {})))
    for name in v.get("drop", []):
        doc.pop(name)
    return doc


@pytest.mark.parametrize("v", DOCS["vectors"], ids=[v["id"] for v in DOCS["vectors"]])
def test_tool_document(v: dict[str, Any]) -> None:
    doc = _document(v)
    if v.get("ok"):
        parsed = parse_tool_document(doc, url=v.get("url"))
        assert (parsed.tool_id, parsed.name, set(parsed.actions)) == (
            doc["tool_id"], doc["name"], set(doc["actions"]))
        # what the registry stores validates again to the same document
        assert parse_tool_document(parsed.model_dump(mode="json")) == parsed
        return
    with pytest.raises(ToolError) as caught:
        parse_tool_document(doc, url=v.get("url"))
    assert caught.value.reason == v["reason"]
    if "message" in v:
        assert str(caught.value) == v["message"]
    assert "s3cr3t" not in str(caught.value)  # a refused secret is never echoed


def test_fetched_bytes_rules() -> None:
    url = DOCS["base"]["tool_id"]
    body = json.dumps(DOCS["base"]).encode()
    assert decode_tool_document(body, url=url).name == "payments"
    for raw, reason in [
        (b"\xff\xfe", "document_not_json"),
        (b"{not json", "document_not_json"),
        (b'{"name": "a", "name": "b"}', "document_not_json"),  # duplicate member
        (b"[]", "document_not_object"),
        (b'"text"', "document_not_object"),
    ]:
        with pytest.raises(ToolError) as caught:
            decode_tool_document(raw, url=url)
        assert caught.value.reason == reason


def test_view_and_hash() -> None:
    doc = parse_tool_document(DOCS["base"])
    view = tool_view(doc, source="pinned")
    assert view.tags == {"payments", "finance"}
    assert view.highest_risk() is Risk.high
    assert view.usable(10**12)  # a pinned document never goes stale
    assert view.document_hash == document_hash(doc)
    assert view.document_hash.startswith("sha-256:")
    fetched = tool_view(doc, source="url", fetched_at=100.0, fresh_until=160.0,
                        usable_until=200.0)
    assert fetched.usable(199.9) and not fetched.usable(200.0)
    reordered = dict(reversed(list(DOCS["base"].items())))
    assert document_hash(parse_tool_document(reordered)) == view.document_hash


FRAUD = "spiffe://acme.org/agents/fraud/**"
GW = "spiffe://acme.org/gw"


@pytest.mark.parametrize(("requires", "chain", "unmet"), [
    ([FRAUD], [GW, "spiffe://acme.org/agents/fraud/checker"], []),
    ([FRAUD], [GW], [FRAUD]),
    ([GW], [GW], []),
    (["spiffe://acme.org/agents/fraudx/**"], ["spiffe://acme.org/agents/fraud/x"],
     ["spiffe://acme.org/agents/fraudx/**"]),
    (["spiffe://other.org/**"], [GW], ["spiffe://other.org/**"]),
    ([], [], []),
    (["spiffe://acme.org/**"], ["not a spiffe id"], ["spiffe://acme.org/**"]),
], ids=["met-by-earlier-actor", "unmet", "met-by-gateway", "whole-segments", "other-domain",
        "none-required", "malformed-member"])
def test_chain_requirements(requires: list[str], chain: list[str], unmet: list[str]) -> None:
    assert list(unmet_chain_requirements(requires, chain)) == unmet


@pytest.mark.parametrize("v", ADDRESSES, ids=[v["id"] for v in ADDRESSES])
def test_special_use_addresses(v: dict[str, Any]) -> None:
    policy = AddressPolicy.of(v.get("allowed_networks", ()), v.get("allowed_hosts", ()))
    if v.get("ok"):
        for address in v["addresses"]:
            policy.check(v["host"], parse_address(address))
        return
    with pytest.raises(BlockedAddress) as caught:
        for address in v["addresses"]:
            policy.check(v["host"], parse_address(address))
    assert caught.value.category == v["category"]


@pytest.mark.parametrize(("header", "lifetime"), [
    (None, 300), ("max-age=600", 600), ("public, max-age=10", 60), ("max-age=999999", 3600),
    ("no-store", 60), ("no-cache, max-age=900", 60), ('max-age="120"', 120),
    ("max-age=-5", 300), ("max-age=abc", 300), ("MAX-AGE=240", 240),
], ids=["absent", "honoured", "below-min", "above-max", "no-store", "no-cache", "quoted",
        "negative", "junk", "case"])
def test_cache_lifetime(header: str | None, lifetime: int) -> None:
    assert cache_lifetime_s(header, ToolSettings()) == lifetime


def test_settings_refuse_bad_allow_lists() -> None:
    with pytest.raises(ValueError):
        ToolSettings(allowed_networks=["10.0.0.0/33"])
    with pytest.raises(ValueError):
        ToolSettings(allowed_hosts=["https://tools.internal"])
    with pytest.raises(ValueError):
        ToolSettings(cache_min_s=600, cache_default_s=300)
