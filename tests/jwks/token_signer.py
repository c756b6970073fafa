"""Signs test tokens the way Writ's signer does (header ``{"alg", "kid", "typ"}``, joserfc),
with nothing but joserfc and ``jwks``: the verifier's tests run where only writ-jwks is
installed (.ci/run). Writ's own signer is tested in tests/signing/."""

from __future__ import annotations

from typing import Any

from joserfc import jwt

from jwks.keys import AnyKey, public_jwk, thumbprint


class KeySigner:
    def __init__(self, key: AnyKey, alg: str) -> None:
        self._key = key
        self.alg = alg
        self.kid = thumbprint(key)

    def public_jwk(self) -> dict[str, Any]:
        return public_jwk(self._key, alg=self.alg)

    def sign(self, claims: dict[str, Any], *, typ: str) -> str:
        header = {"alg": self.alg, "kid": self.kid, "typ": typ}
        return jwt.encode(header, claims, self._key, algorithms=[self.alg])
