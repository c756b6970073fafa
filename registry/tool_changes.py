"""What a refreshed tool document changes that matters to security (docs/tools.md "Refresh
is not a silent redirect"). Pure: two validated documents in, the changes out.

A change that could send an agent's call, or its token, somewhere else, or let it do more
with less oversight, is held for a registrar's approval; anything else (a new description
or name, narrower scopes, fewer actions, higher risk, more approvals, more call-chain
requirements, a shorter maximum TTL) is adopted as before.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Final

from registry.tools import ToolDocument


class ToolChange(StrEnum):
    """One security-relevant difference; the value is the audit's and the metric's label."""

    endpoint = "endpoint"  # where the agent's call goes
    audience = "audience"  # who accepts the token
    token_kind = "token_kind"  # noqa: S105 - a member name: which token the agent presents
    upstream = "upstream"  # the upstream authorization server, grant or scope
    scopes_widened = "scopes_widened"
    actions_added = "actions_added"
    risk_lowered = "risk_lowered"
    approval_dropped = "approval_dropped"
    chain_requirement_removed = "chain_requirement_removed"
    tags_added = "tags_added"  # namespace bounds admit tools by tag
    max_ttl_raised = "max_ttl_raised"
    authorization_details_widened = "authorization_details_widened"
    # the document in force no longer validates (the rules tightened): nothing to compare
    previous_unreadable = "previous_unreadable"


def _upstream(old: ToolDocument, new: ToolDocument) -> bool:
    a, b = old.token, new.token
    return (a.token_endpoint, a.grant, a.scope) != (b.token_endpoint, b.grant, b.scope)


def _risk_lowered(old: ToolDocument, new: ToolDocument) -> bool:
    return any(name in old.actions and action.risk.rank < old.actions[name].risk.rank
               for name, action in new.actions.items())


def _approval_dropped(old: ToolDocument, new: ToolDocument) -> bool:
    return any(name in old.actions and old.actions[name].approval_required
               and not action.approval_required for name, action in new.actions.items())


#: In the order they are reported.
_RULES: Final[tuple[tuple[ToolChange, Callable[[ToolDocument, ToolDocument], bool]], ...]] = (
    (ToolChange.endpoint, lambda o, n: o.endpoint != n.endpoint),
    (ToolChange.audience, lambda o, n: o.audience != n.audience),
    (ToolChange.token_kind, lambda o, n: o.token.kind != n.token.kind),
    (ToolChange.upstream, _upstream),
    (ToolChange.scopes_widened, lambda o, n: not set(n.scopes) <= set(o.scopes)),
    (ToolChange.actions_added, lambda o, n: not set(n.actions) <= set(o.actions)),
    (ToolChange.risk_lowered, _risk_lowered),
    (ToolChange.approval_dropped, _approval_dropped),
    (ToolChange.chain_requirement_removed,
     lambda o, n: not set(o.requires_chain) <= set(n.requires_chain)),
    (ToolChange.tags_added, lambda o, n: not set(n.tags) <= set(o.tags)),
    (ToolChange.max_ttl_raised, lambda o, n: n.max_ttl_s > o.max_ttl_s),
    (ToolChange.authorization_details_widened,
     lambda o, n: not set(n.authorization_details_types) <= set(o.authorization_details_types)),
)


def security_changes(old: ToolDocument, new: ToolDocument) -> tuple[ToolChange, ...]:
    """The security-relevant changes from ``old`` (in force) to ``new`` (just fetched);
    empty when ``new`` may be adopted at once."""
    return tuple(change for change, differs in _RULES if differs(old, new))
