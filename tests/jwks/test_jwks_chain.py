"""Chain helpers over TxnTokenClaims: earlier/current actor requirements, the principal,
and RFC 8693 nested ``act`` reconstruction and agreement with ``act_chain``."""

from __future__ import annotations

from typing import Any

import pytest

from jwks.chain import (
    acted_earlier,
    check_act_agrees,
    nested_act,
    principal,
    require_current_actor,
    require_prior_actor,
)
from jwks.claims import TxnTokenClaims
from jwks.errors import ChainRequirementFailed, InvalidToken
from jwks.patterns import InvalidPattern, SpiffePattern

TD = "spiffe://dev.writ.local"
PLANNER = f"{TD}/agents/planner"
RESEARCHER = f"{TD}/agents/research/web"
CODER = f"{TD}/agents/coder"


def claims(actors: list[str], *, act: Any = "nested", sub: str = "user:alice") -> TxnTokenClaims:
    """Claims whose act_chain is ``actors[:-1]`` and current actor ``actors[-1]``."""
    raw: dict[str, Any] = {
        "iss": "https://writ.dev.writ.local", "aud": "dev.writ.local", "iat": 100, "exp": 400,
        "txn": "t-1", "jti": "j-1", "sub": sub,
    }
    if actors:
        raw["act_chain"] = [{"sub": s, "iat": 100 + i} for i, s in enumerate(actors[:-1])]
        if act == "nested":
            node: dict[str, Any] = {"sub": actors[0]}
            for s in actors[1:]:
                node = {"sub": s, "act": node}
            raw["act"] = node
        else:
            raw["act"] = act
    return TxnTokenClaims.from_claims(raw)


CHAIN = claims([PLANNER, RESEARCHER, CODER])


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (PLANNER, True),
        (RESEARCHER, True),
        (f"{TD}/agents/**", True),
        (f"{TD}/agents/research/*", True),
        (f"{TD}/agents/*", True),
        (CODER, False),  # the current actor is not an earlier one
        (f"{TD}/agents/plan", False),
        (f"{TD}/agents/planner/**", True),
        ("spiffe://prod.writ.local/agents/planner", False),
        (f"{TD}/gateways/**", False),
    ],
)
def test_acted_earlier(pattern: str, expected: bool) -> None:
    assert acted_earlier(CHAIN, pattern) is expected
    assert acted_earlier(CHAIN, SpiffePattern.parse(pattern)) is expected


def test_require_prior_actor() -> None:
    require_prior_actor(CHAIN, f"{TD}/agents/planner")
    with pytest.raises(ChainRequirementFailed) as info:
        require_prior_actor(CHAIN, CODER)
    assert info.value.code == "chain_requirement"
    with pytest.raises(ChainRequirementFailed):
        require_prior_actor(claims([CODER]), PLANNER)


def test_require_current_actor() -> None:
    require_current_actor(CHAIN, f"{TD}/agents/coder")
    require_current_actor(CHAIN, f"{TD}/agents/*")
    with pytest.raises(ChainRequirementFailed) as info:
        require_current_actor(CHAIN, PLANNER)
    assert info.value.code == "chain_requirement"
    with pytest.raises(ChainRequirementFailed):
        require_current_actor(claims([]), f"{TD}/**")


def test_malformed_pattern_is_the_callers_error() -> None:
    with pytest.raises(InvalidPattern):
        acted_earlier(CHAIN, "https://dev.writ.local/agents/planner")
    with pytest.raises(InvalidPattern):
        require_current_actor(CHAIN, f"{TD}/agents/cod*")


def test_principal_is_the_subject() -> None:
    assert principal(CHAIN) == "user:alice"
    assert principal(claims([CODER], sub=CODER)) == CODER


def test_nested_act() -> None:
    assert nested_act(CHAIN) == {
        "sub": CODER, "act": {"sub": RESEARCHER, "act": {"sub": PLANNER}},
    }
    assert nested_act(claims([CODER])) == {"sub": CODER}
    assert nested_act(claims([])) is None


@pytest.mark.parametrize(
    "actors", [[], [CODER], [PLANNER, CODER], [PLANNER, RESEARCHER, CODER]],
    ids=["no-actor", "one", "two", "three"],
)
def test_act_agrees_with_chain(actors: list[str]) -> None:
    c = claims(actors)
    check_act_agrees(c)
    assert c.raw.get("act") == nested_act(c)


@pytest.mark.parametrize(
    "act",
    [
        {"sub": CODER},
        {"sub": CODER, "act": {"sub": PLANNER, "act": {"sub": RESEARCHER}}},
        {"sub": CODER, "act": {"sub": PLANNER}},
        {"sub": CODER, "act": {"sub": RESEARCHER, "act": {"sub": PLANNER,
                                                        "act": {"sub": PLANNER}}}},
    ],
    ids=["not-nested", "order-swapped", "one-missing", "one-extra"],
)
def test_act_disagreeing_with_chain_is_invalid(act: dict[str, Any]) -> None:
    c = claims([PLANNER, RESEARCHER, CODER], act=act)
    with pytest.raises(InvalidToken) as info:
        check_act_agrees(c)
    assert info.value.code == "invalid_act"


def test_chain_without_act_is_invalid() -> None:
    c = claims([PLANNER, CODER], act=None)
    assert c.actor is None
    with pytest.raises(InvalidToken) as info:
        check_act_agrees(c)
    assert info.value.code == "invalid_act"
