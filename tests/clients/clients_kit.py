"""What the third-party client tests share: the registered parties and the running Writ
(``tests/clients/conftest.py`` starts it)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey

from broker.cli.dev import DEV_AGENT, DEV_GATEWAY, DevTrustDomain

TRUST_DOMAIN = "dev.writ.local"
PKJ_GATEWAY = "spiffe://dev.writ.local/gateway/clients"
RESOURCE_SERVER = "spiffe://dev.writ.local/services/clients"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

#: Token profiles the clients run against: name -> environment of ``writ serve``. A second
#: profile is one more entry here (its setting, e.g. the agents-02 shape).
PROFILES: dict[str, dict[str, str]] = {"default": {}}


@dataclass
class Party:
    """A client registered with private_key_jwt: its id and its key (kid ``k1``)."""

    client_id: str
    key: ECKey
    key_file: Path  # the private JWK, mode 0600, for the Node scripts

    def private_jwk(self) -> dict[str, Any]:
        return {**self.key.as_dict(private=True), "kid": "k1", "alg": "ES256"}

    def assertion(self, aud: str) -> str:
        now = int(time.time())
        return jwt.encode({"alg": "ES256", "kid": "k1"},
                          {"iss": self.client_id, "sub": self.client_id, "aud": aud,
                           "jti": uuid.uuid4().hex, "iat": now, "exp": now + 60},
                          self.key, algorithms=["ES256"])


@dataclass
class Writ:
    url: str  # also the issuer
    profile: str
    td: DevTrustDomain
    gateway: Party  # private_key_jwt
    resource_server: Party  # private_key_jwt, may introspect the trust domain's tokens

    def svid(self, spiffe_id: str) -> str:
        return self.td.mint_svid(spiffe_id, self.url)

    def agent_svid(self) -> str:
        return self.svid(DEV_AGENT)

    def dev_gateway_svid(self) -> str:
        """The seeded jwt-spiffe gateway's own JWT-SVID, aud = the issuer."""
        return self.svid(DEV_GATEWAY)
