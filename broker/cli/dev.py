"""Dev mode: a local trust domain, its JWT-SVID signing key and bundle, and sample data.

Refused unless dev mode is on. The dev trust domain's key lives in the data dir (mode
0600) and signs JWT-SVIDs for ``writ dev svid`` and ``writ demo``; it is never used for
Writ's own tokens.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey
from sqlmodel import Session

from jwks.keys import public_jwk, thumbprint
from registry import store
from registry.bounds import NamespaceBoundRule
from registry.charter import Charter, ToolGrant
from registry.models import (
    AgentCreate,
    BundleSourceKind,
    GatewayAuthMethod,
    GatewayCreate,
    TrustDomainCreate,
)
from registry.tool_store import ToolSource, create_tool, fetch_bound, fetch_tool, put_bound
from registry.tools import Risk, ToolDocument

DEV_TRUST_DOMAIN = "dev.writ.local"
DEV_GATEWAY = "spiffe://dev.writ.local/gateway/demo"
DEV_AGENT = "spiffe://dev.writ.local/agents/demo/assistant"
DEV_AGENT_NAMESPACE = "spiffe://dev.writ.local/agents/**"
# a pinned sample tool: never fetched, so dev mode needs no network
DEV_TOOL = "https://tools.dev.writ.local/echo"
DEV_TOOL_DOCUMENT = ToolDocument.model_validate({
    "tool_id": DEV_TOOL,
    "name": "echo",
    "description": "sample tool of dev mode",
    "endpoint": "https://echo.dev.writ.local/v1",
    "audience": "https://echo.dev.writ.local",
    "actions": {"echo": {"risk": "low"}},
    "scopes": ["demo.read"],
    "tags": ["demo"],
    "max_ttl_s": 300,
})
DEV_BOUND = NamespaceBoundRule(
    pattern=DEV_AGENT_NAMESPACE, tags=("demo",), scopes=("*",), max_risk=Risk.medium,
    description="dev mode: sample agents may use demo tools",
)
DEV_CHARTER = Charter(
    purpose="demo assistant",
    scopes=("demo.read", "demo.write"),
    max_ttl_s=300,
    tools=(ToolGrant(tool=DEV_TOOL, actions=("echo",)),),
)


class DevModeRequired(Exception):
    pass


class DevTrustDomain:
    """A local SPIFFE trust domain with one JWT-SVID signing key."""

    def __init__(self, name: str, key: ECKey) -> None:
        self.name = name
        self._key = key
        self.kid = thumbprint(key)

    @classmethod
    def load_or_create(cls, data_dir: Path, name: str = DEV_TRUST_DOMAIN) -> DevTrustDomain:
        path = data_dir / "dev-trust-domain.jwk"
        if path.exists():
            return cls(name, ECKey.import_key(json.loads(path.read_text())))
        data_dir.mkdir(parents=True, exist_ok=True)
        key = ECKey.generate_key("P-256", private=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(key.as_dict(private=True), fh)
        return cls(name, key)

    @classmethod
    def generate(cls, name: str = DEV_TRUST_DOMAIN) -> DevTrustDomain:
        return cls(name, ECKey.generate_key("P-256", private=True))

    def bundle(self) -> dict[str, Any]:
        """The SPIFFE bundle (a JWK Set; Trust Domain and Bundle §4)."""
        return {
            "keys": [public_jwk(self._key, alg="ES256", use="jwt-svid")],
            "spiffe_refresh_hint": 300,
        }

    def mint_svid(
        self,
        spiffe_id: str,
        audience: str | list[str],
        *,
        ttl_s: int = 300,
        now: float | None = None,
        extra: dict[str, Any] | None = None,
    ) -> str:
        """A JWT-SVID (SPIFFE JWT-SVID §2-3) for ``spiffe_id``."""
        issued = int(time.time() if now is None else now)
        claims = {
            "sub": spiffe_id,
            "aud": audience,
            "iat": issued,
            "exp": issued + ttl_s,
            "jti": uuid.uuid4().hex,
            **(extra or {}),
        }
        return jwt.encode(
            {"alg": "ES256", "kid": self.kid, "typ": "JWT"}, claims, self._key, algorithms=["ES256"]
        )


def seed(session: Session, trust_domain: DevTrustDomain, *, now: float) -> list[str]:
    """Create the dev trust domain, sample gateway and sample agent when absent."""
    created = []
    if store.fetch_trust_domain(session, trust_domain.name) is None:
        store.create_trust_domain(
            session,
            TrustDomainCreate(
                name=trust_domain.name,
                source=BundleSourceKind.inline,
                bundle=trust_domain.bundle(),
            ),
            now=now,
        )
        created.append(f"trust domain {trust_domain.name}")
    if store.fetch_gateway(session, DEV_GATEWAY) is None:
        store.create_gateway(
            session,
            GatewayCreate(
                client_id=DEV_GATEWAY,
                auth_method=GatewayAuthMethod.jwt_spiffe,
                description="sample gateway",
                agent_namespaces=[DEV_AGENT_NAMESPACE],
            ),
            now=now,
        )
        created.append(f"gateway {DEV_GATEWAY}")
    if store.fetch_agent(session, DEV_AGENT) is None:
        store.create_agent(
            session,
            AgentCreate(
                spiffe_id=DEV_AGENT,
                owner="dev",
                description="sample agent",
                charter=DEV_CHARTER,
            ),
            now=now,
            by="dev-seed",
        )
        created.append(f"agent {DEV_AGENT}")
    if fetch_tool(session, DEV_TOOL) is None:
        create_tool(session, DEV_TOOL_DOCUMENT, source=ToolSource.pinned, times=None, now=now,
                    by="dev-seed")
        created.append(f"tool {DEV_TOOL}")
    if fetch_bound(session, DEV_BOUND.pattern) is None:
        put_bound(session, DEV_BOUND, now=now, by="dev-seed")
        created.append(f"namespace bound {DEV_BOUND.pattern}")
    session.commit()
    return created
