"""Charter decisions with tools and bounds (tests/vectors/charter_decisions.json), each
through ``POST /token`` and through ``POST /v1/decisions/explain`` (naming the gateway and
agent, and presenting their real JWT-SVIDs): the outcomes, reasons and grants are identical,
and the explanation names the gate that refused. Every refusal is audited with its reason."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session

from broker.admin.tokens import AdminTokenCreate, create_admin_token
from broker.cli.dev import DEV_AGENT, DEV_BOUND, DEV_GATEWAY, DevTrustDomain
from broker.decision.gates import AGENT_GATES
from jwks import StaticKeys, TxnTokenVerifier
from registry import store, tool_store
from registry.bounds import NamespaceBoundRule
from registry.charter import Charter
from registry.models import AgentUpdate
from registry.tool_store import FetchTimes, ToolSource
from registry.tools import parse_tool_document
from tests.conftest import ISSUER, FrozenClock
from tests.grants.test_token_endpoint import audit_rows, decode_segment, post_token, token_params

DATA = json.loads((Path(__file__).parents[1] / "vectors" / "charter_decisions.json").read_text())
VECTORS = DATA["vectors"]
JWT_SPIFFE = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe"


def build_world(engine: Engine, now: float, vector: dict[str, Any]) -> None:
    with Session(engine) as session:
        for raw in DATA["tools"]:
            doc = parse_tool_document({k: v for k, v in raw.items() if not k.startswith("_")})
            if raw.get("_stale"):
                # fetched long ago, never refreshed since: past its usable_until
                times = FetchTimes(fetched_at=now - 900, fresh_until=now - 600,
                                   usable_until=now - 300)
                tool_store.create_tool(session, doc, source=ToolSource.url, times=times,
                                       now=now, by="test")
            else:
                tool_store.create_tool(session, doc, source=ToolSource.pinned, times=None,
                                       now=now, by="test")
        tool_store.delete_bound(session, DEV_BOUND.pattern)
        for bound in vector.get("bounds", DATA["bounds"]):
            tool_store.put_bound(session, NamespaceBoundRule.model_validate(bound), now=now,
                                 by="test")
        charter = {**copy.deepcopy(DATA["charter"]), **vector.get("charter", {})}
        store.update_agent(session, DEV_AGENT, AgentUpdate(charter=Charter.model_validate(charter)),
                           now=now, by="test")
        session.commit()


def admin_token(engine: Engine, now: float) -> str:
    with Session(engine) as session:
        issued = create_admin_token(session, AdminTokenCreate(
            name="explainer", scopes=["decisions:explain"]), now=now, by="test")
        session.commit()
    return issued.token


def explain(client: TestClient, token: str, body: dict[str, Any]) -> dict[str, Any]:
    r = client.post("/v1/decisions/explain", json=body,
                    headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    return r.json()


@pytest.mark.parametrize("vector", VECTORS, ids=[v["id"] for v in VECTORS])
def test_decision(vector: dict[str, Any], client: TestClient, seeded: DevTrustDomain,
                  clock: FrozenClock, engine: Engine) -> None:
    now = clock()
    build_world(engine, now, vector)
    client.app.state.broker.snapshots.refresh()
    overrides: dict[str, Any] = {"scope": vector.get("scope")}
    if "details" in vector:
        overrides["request_details"] = json.dumps(vector["details"])
    if "context" in vector:
        overrides["request_context"] = json.dumps(vector["context"])
    params = token_params(seeded, now, **overrides)
    r = post_token(client, params)

    inputs = {k: v for k, v in {
        "scope": vector.get("scope"), "audience": "dev.writ.local",
        "request_details": vector.get("details"), "request_context": vector.get("context"),
    }.items() if v is not None}
    token = admin_token(engine, now)
    named = explain(client, token, {"gateway": DEV_GATEWAY, "agent": DEV_AGENT, **inputs})
    proven = explain(client, token, {
        "client_assertion_type": JWT_SPIFFE, "client_assertion": params["client_assertion"],
        "subject_token": params["subject_token"], **inputs})
    gates = [g["gate"] for g in named["gates"]]
    assert gates == ["exchange", *(name for name, _ in AGENT_GATES)]
    assert [g["result"] for g in named["gates"]][3:] == [g["result"] for g in proven["gates"]][3:]

    if "issued" in vector:
        assert r.status_code == 200, r.text
        body = r.json()
        want = vector["issued"]
        assert (body["scope"], body["expires_in"], body.get("tool_endpoint")) == (
            want["scope"], want["expires_in"], want.get("tool_endpoint"))
        claims = decode_segment(body["access_token"].split(".")[1])
        assert claims["tctx"] == want["tctx"]
        assert claims["scope"] == want["scope"]
        for answer in (named, proven):
            assert answer["decision"] == "issue"
            assert all(g["result"] == "allowed" for g in answer["gates"])
            grant = answer["grant"]
            assert (grant["scope"], grant["expires_in"], grant.get("tool_endpoint"),
                    grant["tctx"]) == (want["scope"], want["expires_in"],
                                       want.get("tool_endpoint"), want["tctx"])
        # a downstream service verifies it
        jwks_doc = client.get("/.well-known/jwks.json").json()
        TxnTokenVerifier(StaticKeys(jwks_doc), issuer=ISSUER, audience="dev.writ.local",
                         clock=clock).verify(body["access_token"])
        rows = [row for row in audit_rows(engine) if row.kind == "token"]
        assert [(row.decision, row.tool) for row in rows] == [
            ("issued", vector.get("details", {}).get("tool"))]
        return

    assert r.status_code == vector["status"], r.text
    assert r.json()["error"] == vector["error"]
    assert r.headers["cache-control"] == "no-store"
    rows = [row for row in audit_rows(engine) if row.kind == "token"]
    assert [(row.decision, row.reason) for row in rows] == [("denied", vector["reason"])]
    assert rows[0].jti is None and rows[0].tool == vector.get("details", {}).get("tool")
    for answer in (named, proven):
        assert (answer["decision"], answer["error"], answer["reason"]) == (
            "refuse", vector["error"], vector["reason"])
        assert answer["error_description"] == r.json()["error_description"]
        refused = [g for g in answer["gates"] if g["result"] == "refused"]
        assert [(g["gate"], g["reason"]) for g in refused] == [(vector["gate"], vector["reason"])]
        after = answer["gates"][[g["gate"] for g in answer["gates"]].index(vector["gate"]) + 1:]
        assert all(g["result"] == "not_reached" for g in after)
        assert "grant" not in answer or answer["grant"] is None
    # explaining minted and recorded nothing
    assert len([row for row in audit_rows(engine) if row.kind == "token"]) == 1
