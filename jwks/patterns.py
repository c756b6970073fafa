"""SPIFFE ID patterns: the one matcher behind namespace bounds, gateway bounds and
call-chain requirements (DESIGN §4).

A pattern is a SPIFFE ID whose path may contain ``*`` (exactly one segment) and may end
in ``/**`` (the prefix itself and everything below it). The trust domain always matches
exactly, and paths match by whole segments: ``/agents/a/**`` does not cover ``/agents/ab``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from jwks.errors import InvalidPattern, InvalidSpiffeId
from jwks.spiffe_id import SpiffeId, parse_spiffe_id

# re-exported: callers catch InvalidPattern for IDs and patterns alike
__all__ = ["InvalidPattern", "InvalidSpiffeId", "SpiffeId", "SpiffePattern", "matches_any",
           "parse_spiffe_id"]


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
        s for s in base[len("spiffe://") + len(sid.trust_domain) :].split("/") if s
    )
    return SpiffePattern(sid.trust_domain, segments, subtree)


@lru_cache(maxsize=65536)
def _split(spiffe_id: str) -> tuple[str, tuple[str, ...]]:
    sid = parse_spiffe_id(spiffe_id)
    return sid.trust_domain, sid.segments


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
