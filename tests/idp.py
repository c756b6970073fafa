"""A user-token issuer for tests: its signing keys, its discovery documents, and access
tokens for users. Serve it through ``httpx.MockTransport`` (``transport()``) or over real
HTTPS on loopback (``tests.tls.https_server(idp.handler)``).

    idp = TestIssuer("https://idp.test")
    token = idp.mint("alice", scope="mail.send", now=clock())
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from typing import Any

import httpx
from joserfc.jwk import ECKey, RSAKey
from joserfc.jws import JWSRegistry

from jwks.keys import public_jwk, thumbprint


class TestIssuer:
    __test__ = False  # not a pytest class

    def __init__(self, issuer: str, *, alg: str = "ES256", audience: str = "writ") -> None:
        self.issuer = issuer
        self.alg = alg
        self.audience = audience
        self.key: ECKey | RSAKey = self.new_key(alg)
        self.published: list[ECKey | RSAKey] = [self.key]
        self.hits: Counter[str] = Counter()
        self.jwks_path = "/keys"
        self.jwks_down = False  # the JWKS answers 503

    @staticmethod
    def new_key(alg: str) -> ECKey | RSAKey:
        if alg.startswith("ES"):
            return ECKey.generate_key("P-256", private=True)
        return RSAKey.generate_key(2048, private=True)

    @property
    def kid(self) -> str:
        return thumbprint(self.key)

    def rotate(self) -> None:
        """A new signing key, published beside the old one."""
        self.key = self.new_key(self.alg)
        self.published.append(self.key)

    # --- documents -------------------------------------------------------------------

    def openid_configuration(self) -> dict[str, Any]:
        # OpenID Connect Discovery 1.0 §3
        return {
            "issuer": self.issuer,
            "jwks_uri": self.issuer + self.jwks_path,
            "authorization_endpoint": self.issuer + "/authorize",
            "token_endpoint": self.issuer + "/token",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [self.alg],
        }

    def jwks(self) -> dict[str, Any]:
        return {"keys": [public_jwk(k, alg=self.alg) for k in self.published]}

    def handler(self, path: str) -> tuple[int, Mapping[str, str], bytes]:
        """``tests.tls`` handler: discovery and JWKS; 404 otherwise."""
        path = path.split("?", 1)[0]
        self.hits[path] += 1
        prefix = self.issuer.split("://", 1)[1].split("/", 1)
        base = "/" + prefix[1] if len(prefix) > 1 else ""
        if path == base + "/.well-known/openid-configuration":
            body = self.openid_configuration()
        elif path == "/.well-known/oauth-authorization-server" + base:
            body = {"issuer": self.issuer, "jwks_uri": self.issuer + self.jwks_path}
        elif path == base + self.jwks_path:
            if self.jwks_down:
                return 503, {"Content-Type": "text/plain"}, b"unavailable"
            body = self.jwks()
        else:
            return 404, {"Content-Type": "text/plain"}, b"not found"
        return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()

    def transport(self) -> httpx.MockTransport:
        def handle(request: httpx.Request) -> httpx.Response:
            status, headers, body = self.handler(request.url.raw_path.decode())
            return httpx.Response(status, headers=dict(headers), content=body)

        return httpx.MockTransport(handle)

    # --- tokens ----------------------------------------------------------------------

    def claims(self, sub: str, *, now: float | None = None, ttl_s: int = 600,
               scope: str | None = "mail.read mail.send search.query",
               audience: Any = None, **extra: Any) -> dict[str, Any]:
        t = int(time.time() if now is None else now)
        claims: dict[str, Any] = {
            "iss": self.issuer, "sub": sub, "aud": audience or self.audience,
            "iat": t, "exp": t + ttl_s, "jti": uuid.uuid4().hex, "client_id": "webapp",
        }
        if scope is not None:
            claims["scope"] = scope
        claims.update(extra)
        return claims

    def mint(self, sub: str = "alice", *, header: dict[str, Any] | None = None,
             drop: tuple[str, ...] = (), drop_header: tuple[str, ...] = (),
             **kwargs: Any) -> str:
        """An RFC 9068 access token for ``sub``; ``drop`` removes claims, ``drop_header``
        header members."""
        claims = self.claims(sub, **kwargs)
        for name in drop:
            claims.pop(name, None)
        head = {"alg": self.alg, "kid": self.kid, "typ": "at+jwt", **(header or {})}
        for name in drop_header:
            head.pop(name, None)
        # signed by hand so that any header (even one joserfc refuses) can be tested
        signing_input = b".".join(_b64(json.dumps(part).encode()) for part in (head, claims))
        signature = JWSRegistry().get_alg(self.alg).sign(signing_input, self.key)
        return f"{signing_input.decode()}.{_b64(signature).decode()}"


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")
