"""SPIFFE namespace bounds (DESIGN §3 step 4, §4). Pure: no I/O.

A bound maps a SPIFFE ID pattern (``jwks.patterns``: trust domain exact, whole path
segments, ``*`` one segment, ``/**`` a subtree) to the tool tags, scopes and maximum risk
that agents under it may ever receive. Every bound that covers an agent applies, so a
narrower bound can only take away from a wider one. An agent under no bound gets nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, field_validator

from jwks.patterns import SpiffePattern
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


@dataclass(frozen=True)
class NamespaceBounds:
    """Every bound of the registry, with a memo of which ones cover an agent."""

    rules: tuple[BoundView, ...] = ()
    _memo: dict[str, tuple[BoundView, ...]] = field(default_factory=dict, compare=False,
                                                     repr=False)

    @classmethod
    def of(cls, rules: Iterable[BoundView]) -> NamespaceBounds:
        return cls(tuple(sorted(rules, key=lambda b: b.pattern)))

    def __len__(self) -> int:
        return len(self.rules)

    def covering(self, spiffe_id: str) -> tuple[BoundView, ...]:
        """The bounds whose pattern covers ``spiffe_id`` (a well-formed SPIFFE ID)."""
        hit = self._memo.get(spiffe_id)
        if hit is None:
            hit = tuple(b for b in self.rules if SpiffePattern.parse(b.pattern).matches(spiffe_id))
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
