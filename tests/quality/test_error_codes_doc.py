"""docs/errors.md names where every wire code comes from, and says which ones are not RFC 6749
§5.2 token-endpoint codes."""

from __future__ import annotations

import re
from pathlib import Path

import broker.errors
from broker.errors import OAuthError

DOC = Path(__file__).resolve().parents[2] / "docs" / "errors.md"


def _codes() -> set[str]:
    found = set()
    for value in vars(broker.errors).values():
        if isinstance(value, type) and issubclass(value, OAuthError) and value is not OAuthError:
            found.add(value.error)
    return found


def _origin_table() -> dict[str, str]:
    """code -> the 'defined by' cell of the table under '## On the wire'."""
    text = DOC.read_text().split("## On the wire", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            for code in re.findall(r"`([a-z_]+)`", cells[0]):
                rows[code] = cells[1]
    return rows


def test_every_code_has_its_origin() -> None:
    table = _origin_table()
    assert _codes() <= set(table), sorted(_codes() - set(table))


def test_authorization_endpoint_codes_are_called_so() -> None:
    table = _origin_table()
    for code in ("access_denied", "temporarily_unavailable"):
        assert "§4.1.2.1" in table[code] and "authorization-endpoint" in table[code]
    for code in ("invalid_request", "invalid_client", "invalid_scope"):
        assert table[code].startswith("RFC 6749 §5.2")
    assert "RFC 6749 §5.2, RFC 8693 §2.2.2 and RFC 9396 §5" not in DOC.read_text()
