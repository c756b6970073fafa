"""docs/quickstart.md shows the openid-client gateway that tests/clients/test_node_clients.py
runs, character for character."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quickstart_shows_the_tested_gateway() -> None:
    doc = (ROOT / "docs" / "quickstart.md").read_text()
    section = doc.split("## A gateway written with openid-client", 1)[1]
    shown = section.split("```js\n", 1)[1].split("```", 1)[0]
    assert shown == (ROOT / "tests" / "clients" / "node" / "gateway.mjs").read_text()
    assert "algorithm: 'oauth2'" in shown and "RFC 8414" in section
