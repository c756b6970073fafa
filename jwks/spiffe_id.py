"""SPIFFE IDs, parsed exactly as the SPIFFE-ID standard §2 says, in canonical form only.

Every SPIFFE ID check in Writ (token claims, registry keys, admin URL paths, the CLI, the
audit) goes through ``parse_spiffe_id``, so one identity has one spelling everywhere. Beyond
§2 it refuses what §2 leaves to the URI grammar but an identity must never carry: control
characters and any non-ASCII character, and a trust domain longer than 255 bytes (§2.3).
The scheme must be written ``spiffe`` and the trust domain in lowercase: §2.4 calls both
case-insensitive, so ``SPIFFE://Example.org/x`` names the same workload, and accepting that
spelling would give one identity two registry keys. It is refused, never normalised.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from jwks.errors import InvalidSpiffeId

SCHEME: Final = "spiffe://"
#: §2.3: SPIFFE IDs up to 2048 bytes; RFC 3986 host at most 255 bytes.
MAX_ID_BYTES: Final = 2048
MAX_TRUST_DOMAIN_BYTES: Final = 255

# §2.1 trust domain: [a-z0-9.-_]; §2.2 path segments: [a-zA-Z0-9.-_]. ``\Z``, not ``$``:
# ``$`` also matches before a trailing newline.
_TRUST_DOMAIN: Final = re.compile(r"[a-z0-9._-]{1,255}\Z")
_SEGMENT: Final = re.compile(r"[A-Za-z0-9._-]+\Z")
_ID: Final = re.compile(r"spiffe://([a-z0-9._-]{1,255})((?:/[A-Za-z0-9._-]+)*)\Z")


@dataclass(frozen=True, slots=True)
class SpiffeId:
    """A well-formed SPIFFE ID in canonical form; ``str()`` gives it back unchanged."""

    trust_domain: str
    #: "" for the trust domain's own ID, else "/seg/seg" (§2.2)
    path: str

    def __str__(self) -> str:
        return f"{SCHEME}{self.trust_domain}{self.path}"

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.path.split("/")[1:]) if self.path else ()


def _refuse(why: str) -> InvalidSpiffeId:
    # the value itself is never echoed: it may carry control characters or be 2 KiB long
    return InvalidSpiffeId(f"malformed SPIFFE ID: {why}")


def _not_canonical(what: str) -> InvalidSpiffeId:
    return InvalidSpiffeId(f"SPIFFE ID is not in canonical ({what}) form")


def _check_text(value: object) -> str:
    if not isinstance(value, str):
        raise _refuse("not a string")
    if not value.isascii():
        raise _refuse("contains a non-ASCII character")
    if any(c < " " or c == "\x7f" for c in value):
        raise _refuse("contains a control character")
    if len(value) > MAX_ID_BYTES:  # ASCII: characters are bytes
        raise _refuse(f"longer than {MAX_ID_BYTES} bytes (SPIFFE-ID §2.3)")
    return value


def parse_trust_domain(value: object) -> str:
    """Return ``value`` if it is a bare trust domain name in canonical form (§2.1)."""
    name = _check_text(value)
    _check_trust_domain(name)
    return name


def _check_trust_domain(name: str) -> None:
    if not name:
        raise _refuse("the trust domain is empty (SPIFFE-ID §2.1)")
    if len(name) > MAX_TRUST_DOMAIN_BYTES:
        raise _refuse(f"the trust domain is longer than {MAX_TRUST_DOMAIN_BYTES} bytes")
    if _TRUST_DOMAIN.match(name):
        return
    if "[" in name:
        raise _refuse("an IPv6 address is not a trust domain (SPIFFE-ID §2.1)")
    if "@" in name:
        raise _refuse("the trust domain must not carry userinfo (SPIFFE-ID §2.1)")
    if ":" in name:
        raise _refuse("the trust domain must not carry a port (SPIFFE-ID §2.1)")
    if "%" in name:
        raise _refuse("the trust domain must not be percent-encoded (SPIFFE-ID §2.1)")
    if "?" in name or "#" in name:
        raise _refuse("a SPIFFE ID has no query or fragment (SPIFFE-ID §2)")
    if _TRUST_DOMAIN.match(name.lower()):
        raise _not_canonical("lowercase trust domain")
    raise _refuse("the trust domain may hold only a-z, 0-9, '.', '-' and '_' (SPIFFE-ID §2.1)")


def _check_path(path: str) -> None:
    segments = path[1:].split("/")
    for i, segment in enumerate(segments):
        if segment == "":
            if i == len(segments) - 1:
                raise _refuse("the path must not end with '/' (SPIFFE-ID §2.2)")
            raise _refuse("the path must not hold an empty segment (SPIFFE-ID §2.2)")
        if segment in (".", ".."):
            raise _refuse("the path must not hold '.' or '..' segments (SPIFFE-ID §2.2)")
        if _SEGMENT.match(segment):
            continue
        if "%" in segment:
            raise _refuse("the path must not be percent-encoded (SPIFFE-ID §2.2)")
        if "?" in segment or "#" in segment:
            raise _refuse("a SPIFFE ID has no query or fragment (SPIFFE-ID §2)")
        raise _refuse("path segments may hold only A-Z, a-z, 0-9, '.', '-' and '_' "
                      "(SPIFFE-ID §2.2)")


def parse_spiffe_id(value: str) -> SpiffeId:
    """Parse a SPIFFE ID in canonical form, raising ``InvalidSpiffeId`` with the reason."""
    if not isinstance(value, str):
        raise _refuse("not a string")
    return _parse(value)


@lru_cache(maxsize=16384)
def _parse(value: str) -> SpiffeId:
    text = _check_text(value)
    m = _ID.match(text)
    if m is not None:
        td, path = m.group(1), m.group(2)
        if not any(s in (".", "..") for s in path.split("/")):
            return SpiffeId(td, path)
    if not text.startswith(SCHEME):
        if text[: len(SCHEME)].lower() == SCHEME:
            raise _not_canonical("lowercase scheme")
        raise _refuse("the scheme must be spiffe:// (SPIFFE-ID §2)")
    rest = text[len(SCHEME):]
    slash = rest.find("/")
    td, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
    _check_trust_domain(td)
    _check_path(path)
    raise _refuse("not a SPIFFE ID (SPIFFE-ID §2)")  # pragma: no cover - every case named above


def is_spiffe_id(value: object) -> bool:
    """True when ``value`` is a SPIFFE ID in canonical form."""
    try:
        parse_spiffe_id(value)  # type: ignore[arg-type]
    except InvalidSpiffeId:
        return False
    return True
