"""SPIFFE namespace bounds (DESIGN §4): pure decisions over ID prefixes.

All matching goes through ``jwks.patterns`` so gateways, registrars, bounds and chain
requirements share one matcher.
"""

from __future__ import annotations

from jwks.patterns import SpiffePattern, matches_any


def within(spiffe_id: str, namespaces: tuple[str, ...]) -> bool:
    """True when ``spiffe_id`` lies inside any of ``namespaces`` (deny by default)."""
    return bool(namespaces) and matches_any(spiffe_id, namespaces)


def pattern_within(pattern: str, namespaces: tuple[str, ...]) -> bool:
    """True when every ID ``pattern`` covers lies inside one of ``namespaces``."""
    p = SpiffePattern.parse(pattern)
    return any(SpiffePattern.parse(n).covers(p) for n in namespaces)
