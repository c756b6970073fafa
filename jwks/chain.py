"""Questions a downstream service asks of a verified token's call chain. Pure: no I/O.

Only the current actor counts for access control; earlier actors are evidence a service may
require (DESIGN §2), e.g. "the planner acted before me". Every helper reads both token
profiles (``writ``: the current actor is ``act.sub``, earlier ones nest inside and are listed
in ``act_chain``; ``agents-02``: ``act`` is immutable and the current actor is
``agentic_ctx.current_actor``), through ``TxnTokenClaims.actor`` and ``.actors``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from jwks.claims import TxnTokenClaims, act_subjects
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
    """True when an earlier actor (not the current one) matches: ``act_chain`` in the
    ``writ`` profile, ``agentic_ctx`` in ``agents-02``."""
    return any_actor_matches(claims.actors[:-1] if claims.actor else claims.actors, pattern)


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
    for sub in reversed(claims.actors[:-1]):
        inner["act"] = {"sub": sub}
        inner = inner["act"]
    return act


def _bad(why: str) -> InvalidToken:
    return InvalidToken(why, code="invalid_act")


def _agentic(claims: TxnTokenClaims, member: str) -> Any:
    return claims.agentic_ctx.get(member)


def check_act_agrees(claims: TxnTokenClaims) -> None:
    """Raise ``InvalidToken`` (``invalid_act``) when the token's actor claims disagree:
    ``act`` nesting against ``act_chain`` (profile ``writ``), ``act_chain`` beside an
    immutable ``act`` (``agents-02``), or ``agentic_ctx`` against both."""
    act = act_subjects(claims.raw.get("act"))
    has_chain = claims.raw.get("act_chain") is not None
    if not act and claims.actor_chain:
        raise _bad("'act_chain' without 'act'")
    if _agentic(claims, "current_actor") is None:
        # tokens without agentic_ctx.current_actor: RFC 8693 §4.1 nesting only, the earlier
        # actors inside ``act`` exactly as act_chain lists them, oldest innermost. Without
        # act_chain (an RFC 9068 access token) what nests below act.sub is the user's own
        # act (agents-02 §3.7.1), which names no actor of this transaction.
        if has_chain and list(act) != list(reversed(claims.actors)):
            raise _bad("nested 'act' and 'act_chain' disagree")
        return
    actors = claims.actors
    meta = _agentic(claims, "chain_metadata")
    path = meta.get("txn_path") if isinstance(meta, Mapping) else None
    if path is not None and tuple(path) != actors:
        raise _bad("'txn_path' does not list the actors")
    hops = meta.get("hop_count") if isinstance(meta, Mapping) else None
    # agents-02 §3.6.1: hop_count counts the agents, 1 at first issuance; checked when the
    # token lists every actor (act_chain or txn_path)
    listed = path is not None or has_chain
    if hops is not None and listed and (isinstance(hops, bool) or hops != len(actors)):
        raise _bad("'hop_count' does not count the actors")
    # agents-02 §3.6.1: originator is the first actor and never changes
    if claims.originator is not None and claims.originator != actors[0]:
        raise _bad("'originator' is not the first actor")
    if not act:
        return  # agents-02 §3.2.2: no delegation, no act
    if act[0] == claims.actor:
        # profile writ: the actors nest, the current one outermost; what nests below the
        # first actor is the user's own act, copied unmodified (agents-02 §3.7.1)
        if list(act[: len(actors)]) != list(reversed(actors)):
            raise _bad("nested 'act' and the actors disagree")
        return
    # profile agents-02 §3.4.1: act is immutable; the current actor is only in agentic_ctx
    if has_chain:
        raise _bad("'act_chain' beside an immutable 'act'")
