"""SPIFFE ID patterns: the one matcher behind namespace bounds, gateway bounds and
call-chain requirements (DESIGN §4).

A pattern is a SPIFFE ID whose path may contain ``*`` (exactly one segment) and may end
in ``/**`` (the prefix itself and everything below it). The trust domain always matches
exactly, and paths match by whole segments: ``/agents/a/**`` does not cover ``/agents/ab``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from spiffe import SpiffeId
from spiffe.errors import PySpiffeError

from jwks.errors import JwksError


class InvalidPattern(JwksError, ValueError):
    # a ValueError too, so pydantic validators turn it into a validation error
    code = "invalid_pattern"


def parse_spiffe_id(value: str) -> SpiffeId:
    """Parse a SPIFFE ID with pyspiffe (SPIFFE-ID §2), raising ``InvalidPattern``."""
    if not isinstance(value, str) or len(value) > 2048:
        raise InvalidPattern("SPIFFE ID must be a string of at most 2048 bytes")
    try:
        sid = SpiffeId(value)
    except (PySpiffeError, ValueError, TypeError) as err:
        raise InvalidPattern(f"malformed SPIFFE ID: {err}") from err
    # SPIFFE-ID §2.1: the trust domain is lowercase; accept only the canonical form.
    if str(sid) != value:
        raise InvalidPattern("SPIFFE ID is not in canonical (lowercase trust domain) form")
    return sid


@dataclass(frozen=True, slots=True)
class SpiffePattern:
    trust_domain: str
    segments: tuple[str, ...]
    subtree: bool

    @classmethod
    def parse(cls, text: str) -> SpiffePattern:
        return _parse(text)

    def __str__(self) -> str:
        path = "".join(f"/{s}" for s in self.segments)
        return f"spiffe://{self.trust_domain}{path}{'/**' if self.subtree else ''}"

    def matches(self, spiffe_id: str) -> bool:
        """True when ``spiffe_id`` (already a well-formed SPIFFE ID) is covered."""
        td, segs = _split(spiffe_id)
        if td != self.trust_domain:
            return False
        n = len(self.segments)
        if len(segs) < n or (not self.subtree and len(segs) != n):
            return False
        return all(p == "*" or p == s for p, s in zip(self.segments, segs, strict=False))

    def covers(self, other: SpiffePattern) -> bool:
        """True when every ID ``other`` matches is also matched by ``self``."""
        if other.trust_domain != self.trust_domain:
            return False
        n = len(self.segments)
        if len(other.segments) < n or (
            not self.subtree and (other.subtree or len(other.segments) != n)
        ):
            return False
        return all(p == "*" or p == s for p, s in zip(self.segments, other.segments, strict=False))


@lru_cache(maxsize=4096)
def _parse(text: str) -> SpiffePattern:
    if not isinstance(text, str) or not text.startswith("spiffe://"):
        raise InvalidPattern("a pattern must start with spiffe://")
    subtree = text.endswith("/**")
    base = text[:-3] if subtree else text
    concrete = base.replace("/*/", "/x/")
    if concrete.endswith("/*"):
        concrete = concrete[:-2] + "/x"
    while "/*/" in concrete:
        concrete = concrete.replace("/*/", "/x/")
    if "*" in concrete:
        raise InvalidPattern("'*' must be a whole segment and '**' only the last one")
    sid = parse_spiffe_id(concrete)
    segments = tuple(
        s for s in base[len("spiffe://") + len(sid.trust_domain.name) :].split("/") if s
    )
    return SpiffePattern(sid.trust_domain.name, segments, subtree)


@lru_cache(maxsize=65536)
def _split(spiffe_id: str) -> tuple[str, tuple[str, ...]]:
    sid = parse_spiffe_id(spiffe_id)
    path = sid.path
    return sid.trust_domain.name, tuple(s for s in path.split("/") if s)


def matches_any(spiffe_id: str, patterns: tuple[str, ...] | list[str]) -> bool:
    """True when any of ``patterns`` covers ``spiffe_id``."""
    return _matches_any(spiffe_id, tuple(patterns))


@lru_cache(maxsize=65536)
def _matches_any(spiffe_id: str, patterns: tuple[str, ...]) -> bool:
    return any(_parse(p).matches(spiffe_id) for p in patterns)


def split_spiffe_id(spiffe_id: str) -> tuple[str, tuple[str, ...]]:
    """The trust domain and path segments of a well-formed SPIFFE ID; raises
    ``InvalidPattern`` otherwise."""
    return _split(spiffe_id)
