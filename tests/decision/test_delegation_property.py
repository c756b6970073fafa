"""Property: no sequence of replacement requests yields a token whose scope, tools or
lifetime exceed those of the token it replaced (DESIGN §2, delegation rules).

Hypothesis draws a root token (on behalf of a user, any tool) and a sequence of hops: a
delegate, a requested scope (often wider than allowed), request details that try another
tool or action, a requested TTL, and time passing between hops. Whatever Writ answers,
every token it issues is checked against its parent.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from broker.cli.dev import DevTrustDomain
from broker.settings import Settings
from jwks import StaticKeys, TxnTokenVerifier
from tests.conftest import ISSUER, FrozenClock
from tests.idp import TestIssuer
from tests.world import CHAIN, IDP, MAIL_TOOL, MAILER, PLANNER, SEARCH, TD, TXN_TOOL, World, decode
from tests.world import open_world as _open_world

SCOPES = ["mail.read", "mail.send", "search.query", "plan.write", "admin.all"]
DELEGATES = [MAILER, SEARCH, *CHAIN[:4]]

hop = st.fixed_dictionaries({
    "delegate": st.sampled_from(DELEGATES),
    "scope": st.one_of(st.none(), st.none(),
                       st.lists(st.sampled_from(SCOPES), min_size=1, max_size=3, unique=True)),
    # mostly restating nothing; sometimes another tool or action
    "tool": st.sampled_from([None, None, None, TXN_TOOL, MAIL_TOOL]),
    "action": st.sampled_from([None, None, "view", "book", "read"]),
    "ttl_s": st.none() | st.integers(min_value=1, max_value=3600),
    "wait_s": st.integers(min_value=0, max_value=90),
})
root = st.fixed_dictionaries({
    "scope": st.none() | st.lists(st.sampled_from(SCOPES[:4]), min_size=1, max_size=4,
                                  unique=True),
    "tool": st.sampled_from([None, TXN_TOOL]),
    "action": st.just("view"),  # a tool request names its action
})


@pytest.fixture
def world(settings: Settings, engine: Engine, seeded: DevTrustDomain,
          clock: FrozenClock) -> Iterator[World]:
    with _open_world(settings, engine, seeded, clock, TestIssuer(IDP)) as w:
        yield w


def _details(tool: str | None, action: str | None) -> dict[str, Any] | None:
    if tool is None:
        return None
    return {"tool": tool, **({"action": action} if action else {})}


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(start=root, hops=st.lists(hop, min_size=1, max_size=6))
def test_replacements_never_widen(world: World, clock: FrozenClock, start: dict[str, Any],
                                  hops: list[dict[str, Any]]) -> None:
    verify = TxnTokenVerifier(StaticKeys(world.jwks()), issuer=ISSUER, audience=TD,
                              clock=clock).verify
    now = clock()
    r = world.post(world.req.on_behalf_of(
        world.idp.mint("alice", now=now, scope="mail.read mail.send search.query plan.write"),
        PLANNER, now,
        scope=" ".join(start["scope"]) if start["scope"] else None,
        request_details=_details(start["tool"], start["action"])))
    if r.status_code != 200:
        event("root " + r.json()["error_description"])
        return  # the root itself was refused: nothing to replace
    parent = r.json()["access_token"]
    for step in hops:
        clock.advance(step["wait_s"])
        details = _details(step["tool"], step["action"]) or {}
        if step["ttl_s"] is not None:
            details["ttl_s"] = step["ttl_s"]
        r = world.post(world.req.replacement(
            parent, step["delegate"], clock(),
            scope=" ".join(step["scope"]) if step["scope"] else None,
            request_details=details or None))
        if r.status_code != 200:
            event(r.json()["error_description"])
            continue  # refused: the parent stays the newest token
        child = r.json()["access_token"]
        p, c = decode(parent)[1], decode(child)[1]
        verify(child)
        assert set(c["scope"].split()) <= set(p["scope"].split())
        assert c["tctx"] == p["tctx"]  # tool, action and resource never change
        assert c["exp"] <= p["exp"]
        assert c["iat"] >= p["iat"]
        assert (c["txn"], c["sub"], c["aud"]) == (p["txn"], p["sub"], p["aud"])
        assert c["act_chain"][-1]["sub"] == p["act"]["sub"]
        assert c["agentic_ctx"]["chain_metadata"]["hop_count"] == (
            p["agentic_ctx"]["chain_metadata"]["hop_count"] + 1)
        parent = child
        event("replaced")
