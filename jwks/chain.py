"""Questions a downstream service asks of a verified token's call chain. Pure: no I/O.

Only the current actor (``act.sub``) counts for access control; earlier actors are
evidence a service may require (DESIGN §2), e.g. "the planner acted before me".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from jwks.claims import TxnTokenClaims
from jwks.errors import ChainRequirementFailed, InvalidToken
from jwks.patterns import InvalidPattern, SpiffePattern

Pattern = str | SpiffePattern


def _matcher(pattern: Pattern) -> SpiffePattern:
    # A malformed pattern is the caller's configuration error: InvalidPattern propagates.
    return pattern if isinstance(pattern, SpiffePattern) else SpiffePattern.parse(pattern)


def _matches(pattern: SpiffePattern, spiffe_id: str | None) -> bool:
    if spiffe_id is None:
        return False
    try:
        return pattern.matches(spiffe_id)
    except InvalidPattern:
        return False  # not a SPIFFE ID, so no pattern covers it


def principal(claims: TxnTokenClaims) -> str:
    """On whose behalf the transaction runs: ``sub`` (a user, or the agent itself)."""
    return claims.subject


def any_actor_matches(actors: Iterable[str], pattern: Pattern) -> bool:
    """True when one of ``actors`` (SPIFFE IDs) matches ``pattern``. The one test behind
    ``acted_earlier`` and the tool registry's call-chain requirements at issuance, where the
    earlier actors are known before a token exists."""
    p = _matcher(pattern)
    return any(_matches(p, sub) for sub in actors)


def acted_earlier(claims: TxnTokenClaims, pattern: Pattern) -> bool:
    """True when an earlier actor (``act_chain``, not the current one) matches."""
    return any_actor_matches((hop.sub for hop in claims.actor_chain), pattern)


def require_prior_actor(claims: TxnTokenClaims, pattern: Pattern) -> None:
    """Raise ``ChainRequirementFailed`` unless an earlier actor matches ``pattern``."""
    if not acted_earlier(claims, pattern):
        raise ChainRequirementFailed(f"no earlier actor matches {str(pattern)!r}")


def require_current_actor(claims: TxnTokenClaims, pattern: Pattern) -> None:
    """Raise ``ChainRequirementFailed`` unless the current actor matches ``pattern``."""
    if not _matches(_matcher(pattern), claims.actor):
        raise ChainRequirementFailed(f"the current actor does not match {str(pattern)!r}")


def nested_act(claims: TxnTokenClaims) -> dict[str, Any] | None:
    """The RFC 8693 §4.1 ``act`` claim the actors imply: the current actor outermost,
    each earlier one nested inside the next (most recent first)."""
    if claims.actor is None:
        return None
    act: dict[str, Any] = {"sub": claims.actor}
    inner = act
    for hop in reversed(claims.actor_chain):
        inner["act"] = {"sub": hop.sub}
        inner = inner["act"]
    return act


def _act_subjects(act: Any) -> list[str]:
    subs = []
    while isinstance(act, Mapping) and "sub" in act:
        subs.append(act["sub"])
        act = act.get("act")
    return subs


def check_act_agrees(claims: TxnTokenClaims) -> None:
    """Raise ``InvalidToken`` (``invalid_act``) when the nested ``act`` in the token and
    its ``act_chain`` name different actors or a different order."""
    # RFC 8693 §4.1: earlier actors nest inside ``act``; act_chain lists them oldest first.
    if claims.actor is None and claims.actor_chain:
        raise InvalidToken("'act_chain' without 'act'", code="invalid_act")
    want = list(reversed(claims.actors))
    got = _act_subjects(claims.raw.get("act"))
    if got != want:
        raise InvalidToken("nested 'act' and 'act_chain' disagree", code="invalid_act")
