"""A registry change is applied to the in-memory snapshot as a delta: after every kind of
write, the delta-applied snapshot holds exactly what a full load would; a change log that no
longer reaches back falls back to a full load; a delta reads only the changed rows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, delete
from sqlmodel import Session

import registry.snapshot as snapshot_module
from broker.cli.dev import DEV_AGENT, DEV_CHARTER, DEV_GATEWAY, DevTrustDomain
from registry import issuers, store, tool_store
from registry.bounds import NamespaceBoundRule
from registry.models import (
    AgentCreate,
    AgentUpdate,
    BundleSourceKind,
    GatewayAuthMethod,
    GatewayCreate,
    RegistryChange,
    Status,
    TrustDomainCreate,
)
from registry.snapshot import RegistrySnapshot, SnapshotHolder, load_snapshot
from registry.tool_store import ToolSource
from registry.tools import Risk, parse_tool_document
from tests.conftest import FrozenClock

TOOL = "https://tools.example/crm"


def content(snap: RegistrySnapshot) -> dict[str, Any]:
    return {
        "agents": dict(snap.agents), "gateways": dict(snap.gateways),
        "trust_domains": dict(snap.trust_domains), "issuers": dict(snap.issuers),
        "tools": dict(snap.tools), "bounds": snap.bounds.rules,
    }


def tool_doc(scopes: list[str]) -> Any:
    return parse_tool_document({
        "tool_id": TOOL, "name": "crm", "endpoint": "https://crm.example/", "audience": "crm",
        "scopes": scopes, "tags": ["crm"], "actions": {"read": {"risk": "low"}},
    })


def writes(dev: DevTrustDomain, now: float) -> list[tuple[str, Callable[[Session], Any]]]:
    other = "spiffe://dev.writ.local/agents/other"
    return [
        ("enroll", lambda s: store.create_agent(s, AgentCreate(
            spiffe_id=other, owner="o", charter=DEV_CHARTER), now=now, by="t")),
        ("charter", lambda s: store.update_agent(s, other, AgentUpdate(
            owner="p", charter=DEV_CHARTER.model_copy(update={"max_ttl_s": 60})), now=now,
            by="t")),
        ("suspend", lambda s: store.set_agent_status(s, DEV_AGENT, Status.suspended, now=now)),
        ("remove", lambda s: store.delete_agent(s, other)),
        ("gateway", lambda s: store.create_gateway(s, GatewayCreate(
            client_id="spiffe://dev.writ.local/gw/2", auth_method=GatewayAuthMethod.jwt_spiffe,
            agent_namespaces=["spiffe://dev.writ.local/agents/**"]), now=now)),
        ("gateway status", lambda s: store.set_gateway_status(s, DEV_GATEWAY, Status.suspended,
                                                              now=now)),
        ("gateway removed", lambda s: store.delete_gateway(s, "spiffe://dev.writ.local/gw/2")),
        ("trust domain", lambda s: store.create_trust_domain(s, TrustDomainCreate(
            name="partner.example", source=BundleSourceKind.inline, bundle=dev.bundle()),
            now=now)),
        ("tool", lambda s: tool_store.create_tool(s, tool_doc(["crm.read"]),
                                                  source=ToolSource.pinned, times=None,
                                                  now=now, by="t")),
        ("tool changed", lambda s: tool_store.update_tool_document(
            s, TOOL, tool_doc(["crm.read", "crm.write"]), times=None, now=now)),
        ("bound", lambda s: tool_store.put_bound(s, NamespaceBoundRule(
            pattern="spiffe://dev.writ.local/agents/*/x/**", tags=("crm",),
            scopes=("crm.read",), max_risk=Risk.low), now=now, by="t")),
        ("bound replaced", lambda s: tool_store.put_bound(s, NamespaceBoundRule(
            pattern="spiffe://dev.writ.local/agents/*/x/**", tags=("*",), scopes=("*",),
            max_risk=Risk.high), now=now, by="t")),
        ("bound removed", lambda s: tool_store.delete_bound(
            s, "spiffe://dev.writ.local/agents/*/x/**")),
        ("tool removed", lambda s: tool_store.delete_tool(s, TOOL)),
        ("issuer", lambda s: issuers.create_issuer(s, issuers.TrustedIssuerCreate(
            issuer="https://idp.example", audiences=["writ"]), now=now, by="t")),
        ("issuer removed", lambda s: issuers.delete_issuer(s, "https://idp.example")),
        ("trust domain removed", lambda s: store.delete_trust_domain(s, dev.name)),
    ]


def test_every_kind_of_write_applies_as_the_full_load_would(
    engine: Engine, seeded: DevTrustDomain, clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    holder = SnapshotHolder(engine)
    holder.refresh(force=True)
    full_loads = 0
    real_load = snapshot_module.load_snapshot

    def counting_load(session: Session) -> RegistrySnapshot:
        nonlocal full_loads
        full_loads += 1
        return real_load(session)

    monkeypatch.setattr(snapshot_module, "load_snapshot", counting_load)
    for name, write in writes(seeded, clock()):
        with Session(engine) as s:
            write(s)
            s.commit()
        before = holder.current
        assert holder.refresh(), name
        assert holder.current.version > before.version, name
        with Session(engine) as s:
            assert content(holder.current) == content(real_load(s)), name
    assert full_loads == 0  # every write above was applied as a delta


def test_unchanged_entries_are_shared_with_the_previous_snapshot(
    engine: Engine, seeded: DevTrustDomain, clock: FrozenClock,
) -> None:
    holder = SnapshotHolder(engine)
    holder.refresh(force=True)
    before = holder.current
    with Session(engine) as s:
        store.set_gateway_status(s, DEV_GATEWAY, Status.suspended, now=clock())
        s.commit()
    holder.refresh()
    assert holder.current.agents[DEV_AGENT] is before.agents[DEV_AGENT]
    assert holder.current.bounds is before.bounds
    assert holder.current.gateways[DEV_GATEWAY].status is Status.suspended
    assert before.gateways[DEV_GATEWAY].status is Status.active  # the old one is untouched


def test_a_pruned_change_log_falls_back_to_a_full_load(
    engine: Engine, seeded: DevTrustDomain, clock: FrozenClock,
) -> None:
    holder = SnapshotHolder(engine)
    holder.refresh(force=True)
    with Session(engine) as s:
        store.set_agent_status(s, DEV_AGENT, Status.suspended, now=clock())
        s.execute(delete(RegistryChange))  # as if pruned while this replica was away
        s.commit()
    holder.refresh()
    assert holder.current.agents[DEV_AGENT].status is Status.suspended
    with Session(engine) as s:
        assert content(holder.current) == content(load_snapshot(s))


def test_an_unknown_kind_of_change_reloads_in_full(
    engine: Engine, seeded: DevTrustDomain, clock: FrozenClock,
) -> None:
    holder = SnapshotHolder(engine)
    holder.refresh(force=True)
    with Session(engine) as s:
        store.bump_version(s)  # a write that names no row: the safe default is a full load
        s.commit()
    assert holder.refresh()
    with Session(engine) as s:
        assert content(holder.current) == content(load_snapshot(s))
