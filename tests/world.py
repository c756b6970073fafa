"""A small agent world for the on-behalf-of and replacement profiles: a trusted user-token
issuer, a planner that may delegate to a mailer, a mailer that may delegate to a search
agent, a chain of agents for the hop limit, an access-token tool, and a namespace bound.

``build_world(session, now)`` writes it into the registry; ``Requests`` builds token
requests for the dev gateway.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from broker.app import create_app
from broker.audit.writer import AuditRecord
from broker.cli.dev import DEV_GATEWAY, DevTrustDomain
from broker.settings import Settings
from jwks.claims import TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT, TOKEN_TYPE_TXN_TOKEN
from registry import store, tool_store
from registry.bounds import NamespaceBoundRule
from registry.charter import Charter
from registry.issuers import TrustedIssuerCreate, create_issuer
from registry.models import AgentCreate, GatewayUpdate
from registry.tools import Risk, parse_tool_document
from tests.conftest import ISSUER
from tests.idp import TestIssuer

GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_SPIFFE = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe"
TD = "dev.writ.local"
IDP = "https://idp.test"
#: alice of the test issuer as Writ names her: unique in the trust domain
ALICE = f"{IDP}#alice"
AGENTS = f"spiffe://{TD}/agents"
PLANNER = f"{AGENTS}/planner"
MAILER = f"{AGENTS}/mailer"
SEARCH = f"{AGENTS}/search"
OUTSIDER = f"{AGENTS}/outsider"
CHAIN = [f"{AGENTS}/chain/a{i}" for i in range(1, 8)]
MAIL_TOOL = "https://tools.example.com/mail"
MAIL_AUDIENCE = "https://mail.example.com"
TXN_TOOL = "https://tools.example.com/calendar"
USER_SCOPE = "mail.read mail.send search.query plan.write"
#: the client the test issuer's tokens name (tests/idp.py), allowed for it
USER_CLIENT = "webapp"

CHARTERS: dict[str, dict[str, Any]] = {
    PLANNER: {"purpose": "plans the user's errands", "max_ttl_s": 300,
              "scopes": ["mail.read", "mail.send", "search.query", "plan.write"],
              "tools": [{"tool": MAIL_TOOL, "actions": ["send", "read"]},
                        {"tool": TXN_TOOL, "actions": ["book", "view"]}],
              "delegate_to": [MAILER, SEARCH, f"{AGENTS}/chain/**"]},
    MAILER: {"purpose": "sends mail", "max_ttl_s": 240,
             "scopes": ["mail.send", "mail.read", "search.query"],
             "tools": [{"tool": MAIL_TOOL, "actions": ["send", "read"]},
                       {"tool": TXN_TOOL, "actions": ["book", "view"]}],
             "delegate_to": [SEARCH, PLANNER]},
    SEARCH: {"purpose": "searches", "max_ttl_s": 120, "scopes": ["search.query", "mail.read"],
             "tools": [{"tool": MAIL_TOOL, "actions": ["read"]},
                       {"tool": TXN_TOOL, "actions": ["view"]}],
             "delegate_to": [f"{AGENTS}/**"]},
    OUTSIDER: {"purpose": "nobody delegates to it", "scopes": ["search.query"]},
    **{a: {"purpose": "link", "scopes": ["search.query", "mail.read"], "max_ttl_s": 300,
           "delegate_to": [f"{AGENTS}/chain/**", MAILER]} for a in CHAIN},
}

MAIL_TOOL_DOC = {
    "tool_id": MAIL_TOOL, "name": "mail", "endpoint": "https://mail.example.com/api",
    "audience": MAIL_AUDIENCE, "scopes": ["mail.send", "mail.read"], "tags": ["mail"],
    "actions": {"send": {"risk": "low"}, "read": {"risk": "low"}},
    "token": {"kind": "access_token"}, "max_ttl_s": 60,
}
TXN_TOOL_DOC = {
    "tool_id": TXN_TOOL, "name": "calendar", "endpoint": "https://cal.example.com/api",
    "audience": "https://cal.example.com", "tags": ["calendar"],
    "scopes": ["plan.write", "mail.read", "mail.send", "search.query"],
    "actions": {"book": {"risk": "low"}, "view": {"risk": "low"}},
    "authorization_details_types": ["cal"],
}


def build_world(session: Session, idp: TestIssuer, now: float) -> None:
    create_issuer(session, TrustedIssuerCreate(
        issuer=idp.issuer, audiences=[idp.audience], algorithms=[idp.alg],
        allowed_clients=[USER_CLIENT], agent_namespaces=[f"{AGENTS}/**"]), now=now, by="test")
    for spiffe_id, charter in CHARTERS.items():
        store.create_agent(session, AgentCreate(
            spiffe_id=spiffe_id, owner="test", charter=Charter.model_validate(charter)),
            now=now, by="test")
    store.update_gateway(session, DEV_GATEWAY, GatewayUpdate(
        token_types=[TOKEN_TYPE_TXN_TOKEN, TOKEN_TYPE_ACCESS_TOKEN]), now=now)
    for doc in (MAIL_TOOL_DOC, TXN_TOOL_DOC):
        tool_store.create_tool(session, parse_tool_document(doc),
                               source=tool_store.ToolSource.pinned, times=None, now=now,
                               by="test")
    tool_store.put_bound(session, NamespaceBoundRule(
        pattern=f"{AGENTS}/**", tags=("*",), scopes=("*",), max_risk=Risk.critical),
        now=now, by="test")
    session.commit()


class Requests:
    """Form parameters of token requests from the dev gateway."""

    def __init__(self, td: DevTrustDomain, issuer: str) -> None:
        self.td = td
        self.issuer = issuer

    def svid(self, spiffe_id: str, now: float) -> str:
        return self.td.mint_svid(spiffe_id, self.issuer, now=now)

    def base(self, now: float) -> dict[str, str]:
        return {
            "grant_type": GRANT,
            "client_assertion_type": JWT_SPIFFE,
            "client_assertion": self.svid(DEV_GATEWAY, now),
        }

    def on_behalf_of(self, user_token: str, agent: str, now: float,
                     **extra: Any) -> dict[str, str]:
        user = decode(user_token)[1]
        held = user.get("scope", " ".join(user.get("scp", ()))).split()
        if extra.get("requested_token_type") == TOKEN_TYPE_ACCESS_TOKEN:
            # RFC 8693 §2.1: resource or audience names the tool; scope stays optional
            return self._merge({**self.base(now), "subject_token": user_token,
                                "subject_token_type": TOKEN_TYPE_ACCESS_TOKEN,
                                "actor_token": self.svid(agent, now),
                                "actor_token_type": TOKEN_TYPE_JWT}, extra)
        return self._merge({
            **self.base(now),
            "subject_token": user_token,
            "subject_token_type": TOKEN_TYPE_ACCESS_TOKEN,
            "actor_token": self.svid(agent, now),
            "actor_token_type": TOKEN_TYPE_JWT,
            "requested_token_type": TOKEN_TYPE_TXN_TOKEN,
            "audience": TD,
            **_scope(agent, held, _tool(extra)),
        }, extra)

    def replacement(self, parent: str, delegate: str, now: float,
                    **extra: Any) -> dict[str, str]:
        try:
            held = decode(parent)[1]
        except ValueError:  # a malformed parent under test
            held = {}
        return self._merge({
            **self.base(now),
            "subject_token": parent,
            "subject_token_type": TOKEN_TYPE_TXN_TOKEN,
            "actor_token": self.svid(delegate, now),
            "actor_token_type": TOKEN_TYPE_JWT,
            "requested_token_type": TOKEN_TYPE_TXN_TOKEN,
            "audience": TD,
            **_scope(delegate, held.get("scope", "").split(),
                     held.get("tctx", {}).get("tool")),
        }, extra)

    def autonomous(self, agent: str, now: float, **extra: Any) -> dict[str, str]:
        return self._merge({
            **self.base(now),
            "subject_token": self.svid(agent, now),
            "subject_token_type": TOKEN_TYPE_JWT,
            "requested_token_type": TOKEN_TYPE_TXN_TOKEN,
            "audience": TD,
            **_scope(agent, None, _tool(extra)),
        }, extra)

    @staticmethod
    def _merge(params: dict[str, str], extra: dict[str, Any]) -> dict[str, str]:
        for key, value in extra.items():
            if value is None:
                params.pop(key, None)
            elif isinstance(value, dict | list):
                params[key] = json.dumps(value)
            else:
                params[key] = str(value)
        return params


def _tool(extra: dict[str, Any]) -> str | None:
    details = extra.get("request_details")
    if isinstance(details, str):
        details = json.loads(details)
    return details.get("tool") if isinstance(details, dict) else None


def _scope(agent: str, held: list[str] | None, tool: str | None) -> dict[str, str]:
    """``scope`` is REQUIRED (draft-ietf-oauth-transaction-tokens-10): by default ask for
    what the agent's charter, the scope held (user or parent) and the tool allow together;
    nothing when they share none, so the request shows the refusal."""
    scope = set(CHARTERS.get(agent, {}).get("scopes", ()))
    if held is not None:
        scope &= set(held)
    doc = {MAIL_TOOL: MAIL_TOOL_DOC, TXN_TOOL: TXN_TOOL_DOC}.get(tool or "")
    if doc is not None:
        scope &= set(doc["scopes"])
    return {"scope": " ".join(sorted(scope))} if scope else {}


@dataclass
class World:
    client: TestClient
    broker: Any
    req: Requests
    idp: TestIssuer
    clock: Any
    engine: Engine

    def post(self, params: dict[str, str]) -> Any:
        return self.client.post("/token", content=urlencode(params),
                                headers={"Content-Type": "application/x-www-form-urlencoded"})

    def issue(self, params: dict[str, str]) -> str:
        r = self.post(params)
        assert r.status_code == 200, r.text
        token: str = r.json()["access_token"]
        return token

    def obo(self, agent: str = PLANNER, **extra: Any) -> str:
        """A Txn-Token on behalf of alice for ``agent``."""
        now = self.clock()
        user = self.idp.mint("alice", now=now, scope=USER_SCOPE)
        return self.issue(self.req.on_behalf_of(user, agent, now, **extra))

    def replace(self, parent: str, delegate: str, **extra: Any) -> str:
        return self.issue(self.req.replacement(parent, delegate, self.clock(), **extra))

    def chain(self, *agents: str) -> str:
        """OBO for the first agent, then one replacement per following agent."""
        token = self.obo(agents[0])
        for agent in agents[1:]:
            token = self.replace(token, agent)
        return token

    def jwks(self) -> dict[str, Any]:
        doc: dict[str, Any] = self.client.get("/.well-known/jwks.json").json()
        return doc

    def refresh(self) -> None:
        self.broker.snapshots.refresh()


@contextmanager
def open_world(settings: Settings, engine: Engine, td: DevTrustDomain, clock: Any,
               idp: TestIssuer) -> Iterator[World]:
    """The app over ``engine`` with the world written in, its user-token issuer served
    through ``httpx.MockTransport``."""
    with Session(engine) as session:
        build_world(session, idp, clock())
    app = create_app(settings, engine=engine, clock=clock)
    broker = app.state.broker
    broker.user_tokens.prefetch = False
    broker.user_tokens.use_http(httpx.Client(transport=idp.transport()))
    with TestClient(app, base_url=ISSUER) as client:
        yield World(client, broker, Requests(td, ISSUER), idp, clock, engine)


def token_rows(engine: Engine) -> list[AuditRecord]:
    with Session(engine) as s:
        stmt = select(AuditRecord).where(col(AuditRecord.kind) == "token")
        return list(s.exec(stmt.order_by(col(AuditRecord.seq))))


def decode(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims of a compact JWS, unverified."""
    head, payload, _ = token.split(".")
    return tuple(  # type: ignore[return-value]
        json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4))) for p in (head, payload))
