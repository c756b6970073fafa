"""SPIFFE namespace bounds (DESIGN §3 step 4, §4). Pure: no I/O.

A bound maps a SPIFFE ID pattern (``jwks.patterns``: trust domain exact, whole path
segments, ``*`` one segment, ``/**`` a subtree) to the tool tags, scopes and maximum risk
that agents under it may ever receive. Every bound that covers an agent applies, so a
narrower bound can only take away from a wider one. An agent under no bound gets nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import immutables
from pydantic import BaseModel, ConfigDict, Field, field_validator

from jwks.patterns import SpiffePattern, split_spiffe_id
from registry.charter import SCOPE_TOKEN
from registry.tools import TAG, Risk, ToolView

ANY: Final = "*"  # in tags or scopes: no limit from this bound
_MEMO_MAX: Final = 65_536


class BoundRefusal(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class NamespaceBoundRule(BaseModel):
    """The body of one bound (admin API and CLI)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pattern: str = Field(max_length=2048)
    tags: tuple[str, ...] = Field(default=(), max_length=64)
    scopes: tuple[str, ...] = Field(default=(), max_length=128)
    max_risk: Risk = Risk.low
    description: str = Field(default="", max_length=1024)

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        SpiffePattern.parse(value)
        return value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for t in value:
            if t != ANY and not TAG.match(t):
                raise ValueError(f"tag {t!r} must be '*' or match {TAG.pattern}")
        return tuple(dict.fromkeys(value))

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for s in value:
            if s != ANY and not SCOPE_TOKEN.match(s):
                raise ValueError(f"scope {s!r} must be '*' or an RFC 6749 §3.3 scope-token")
        return tuple(dict.fromkeys(value))


@dataclass(frozen=True, slots=True)
class BoundView:
    pattern: str
    tags: frozenset[str]
    scopes: frozenset[str]
    max_risk: Risk

    def allows_scopes(self, scopes: frozenset[str]) -> bool:
        return ANY in self.scopes or scopes <= self.scopes

    def allows_tool(self, tool: ToolView) -> bool:
        return ANY in self.tags or bool(tool.tags & self.tags)

    def narrow(self, scopes: frozenset[str]) -> frozenset[str]:
        return scopes if ANY in self.scopes else scopes & self.scopes


@dataclass(frozen=True, slots=True)
class _Node:
    """One path segment of the bounds index: ``children`` by segment (``*`` for a one-segment
    wildcard), the bounds whose pattern ends exactly here, and those ending in ``/**`` here."""

    children: immutables.Map[str, _Node] = field(default_factory=immutables.Map)
    exact: tuple[BoundView, ...] = ()
    subtree: tuple[BoundView, ...] = ()

    def empty(self) -> bool:
        return not (self.children or self.exact or self.subtree)


def _put(root: _Node, segments: tuple[str, ...], subtree: bool, bound: BoundView | None,
         pattern: str) -> _Node:
    """A copy of ``root`` with ``pattern``'s bound replaced by ``bound`` (removed when None);
    only the nodes on the pattern's path are copied. Iterative: a path may have many
    segments."""
    path = [root]
    for seg in segments:
        path.append(path[-1].children.get(seg, _Node()))
    leaf = path[-1]
    exact = tuple(v for v in leaf.exact if v.pattern != pattern)
    sub = tuple(v for v in leaf.subtree if v.pattern != pattern)
    if bound is not None:
        if subtree:
            sub = (*sub, bound)
        else:
            exact = (*exact, bound)
    node = _Node(leaf.children, exact, sub)
    for parent, seg in zip(reversed(path[:-1]), reversed(segments), strict=True):
        children = (parent.children.set(seg, node) if not node.empty()
                    else parent.children.delete(seg) if seg in parent.children
                    else parent.children)
        node = _Node(children, parent.exact, parent.subtree)
    return node


def _walk(root: _Node, segs: tuple[str, ...], out: list[BoundView]) -> None:
    stack = [(root, 0)]
    while stack:
        node, i = stack.pop()
        out.extend(node.subtree)  # /** covers the prefix itself and everything below it
        if i == len(segs):
            out.extend(node.exact)
            continue
        for key in (segs[i], "*"):
            child = node.children.get(key)
            if child is not None:
                stack.append((child, i + 1))


def _build(rules: Iterable[BoundView]) -> tuple[dict[str, BoundView], dict[str, _Node]]:
    """The index of many bounds at once (a full load), built mutable and frozen bottom-up."""
    by_pattern = {rule.pattern: rule for rule in rules}
    Draft = tuple[dict[str, Any], list[BoundView], list[BoundView]]
    drafts: dict[str, Draft] = {}
    order: list[Draft] = []  # parents before children
    for rule in by_pattern.values():
        parsed = SpiffePattern.parse(rule.pattern)
        node = drafts.get(parsed.trust_domain)
        if node is None:
            node = drafts[parsed.trust_domain] = ({}, [], [])
            order.append(node)
        for seg in parsed.segments:
            child = node[0].get(seg)
            if child is None:
                child = node[0][seg] = ({}, [], [])
                order.append(child)
            node = child
        (node[2] if parsed.subtree else node[1]).append(rule)
    frozen: dict[int, _Node] = {}
    for draft in reversed(order):  # children before parents
        frozen[id(draft)] = _Node(
            immutables.Map({seg: frozen[id(child)] for seg, child in draft[0].items()}),
            tuple(draft[1]), tuple(draft[2]))
    return by_pattern, {td: frozen[id(draft)] for td, draft in drafts.items()}


@dataclass(frozen=True)
class NamespaceBounds:
    """Every bound of the registry, indexed by trust domain and path segment, with a memo of
    which ones cover an agent. A lookup walks one path of the index: its cost does not grow
    with the number of bounds. ``with_bound``/``without`` return a changed copy that shares
    everything off the changed path (a registry change is applied as a delta)."""

    by_pattern: immutables.Map[str, BoundView] = field(default_factory=immutables.Map)
    roots: immutables.Map[str, _Node] = field(default_factory=immutables.Map)
    _memo: dict[str, tuple[BoundView, ...]] = field(default_factory=dict, compare=False,
                                                     repr=False)

    @classmethod
    def of(cls, rules: Iterable[BoundView]) -> NamespaceBounds:
        by_pattern, roots = _build(rules)
        return cls(immutables.Map(by_pattern), immutables.Map(roots))

    @property
    def rules(self) -> tuple[BoundView, ...]:
        return tuple(sorted(self.by_pattern.values(), key=lambda b: b.pattern))

    def __len__(self) -> int:
        return len(self.by_pattern)

    def _place(self, pattern: str, bound: BoundView | None) -> NamespaceBounds:
        parsed = SpiffePattern.parse(pattern)
        root = self.roots.get(parsed.trust_domain, _Node())
        root = _put(root, parsed.segments, parsed.subtree, bound, pattern)
        roots = (self.roots.delete(parsed.trust_domain)
                 if root.empty() and parsed.trust_domain in self.roots
                 else self.roots if root.empty() else self.roots.set(parsed.trust_domain, root))
        by_pattern = (self.by_pattern.set(pattern, bound) if bound is not None
                      else self.by_pattern.delete(pattern) if pattern in self.by_pattern
                      else self.by_pattern)
        return NamespaceBounds(by_pattern, roots)

    def with_bound(self, bound: BoundView) -> NamespaceBounds:
        return self._place(bound.pattern, bound)

    def without(self, pattern: str) -> NamespaceBounds:
        return self._place(pattern, None) if pattern in self.by_pattern else self

    def covering(self, spiffe_id: str) -> tuple[BoundView, ...]:
        """The bounds whose pattern covers ``spiffe_id`` (a well-formed SPIFFE ID), ordered by
        pattern."""
        hit = self._memo.get(spiffe_id)
        if hit is None:
            td, segs = split_spiffe_id(spiffe_id)
            out: list[BoundView] = []
            root = self.roots.get(td)
            if root is not None:
                _walk(root, segs, out)
            hit = tuple(sorted(out, key=lambda b: b.pattern))
            if len(self._memo) >= _MEMO_MAX:
                self._memo.clear()
            self._memo[spiffe_id] = hit
        return hit


def check_bounds(
    bounds: NamespaceBounds,
    agent_id: str,
    *,
    scopes: frozenset[str] | None,
    tool: ToolView | None,
    action: str | None,
) -> tuple[BoundView, ...]:
    """Raise ``BoundRefusal`` when the request falls outside any bound covering the agent;
    return those bounds. An unregistered tool is left to the tool gate."""
    covering = bounds.covering(agent_id)
    if not covering:
        raise BoundRefusal("namespace_unbounded", "no namespace bound covers the agent")
    for bound in covering:
        if scopes is not None and not bound.allows_scopes(scopes):
            raise BoundRefusal("scope_outside_bounds",
                               "a requested scope is outside the agent's namespace bounds")
        if tool is None:
            continue
        if not bound.allows_tool(tool):
            raise BoundRefusal("tool_outside_bounds",
                               "the tool has no tag the agent's namespace bounds allow")
        declared = tool.actions.get(action) if action is not None else None
        # no (or an undeclared) action: judge by the tool's riskiest action
        risk = declared.risk if declared is not None else tool.highest_risk()
        if risk.rank > bound.max_risk.rank:
            raise BoundRefusal("risk_outside_bounds",
                               "the action's risk is above the agent's namespace bounds")
    return covering


def narrow_scopes(scopes: frozenset[str], covering: Iterable[BoundView]) -> frozenset[str]:
    for bound in covering:
        scopes = bound.narrow(scopes)
    return scopes
