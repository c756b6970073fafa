"""The signer: the only object that holds a private key, and it never hands it out.

Claim building happens elsewhere (``broker.claims.txn_token``); the signer only adds the JOSE header
``{"alg", "kid", "typ"}`` and signs (SPIRE's credtemplate vs ca split).
"""

from __future__ import annotations

from typing import Any, Protocol

from joserfc import jwt

from jwks.keys import AnyKey, public_jwk, thumbprint


class Signer(Protocol):
    @property
    def kid(self) -> str: ...

    @property
    def alg(self) -> str: ...

    def public_jwk(self) -> dict[str, Any]: ...

    def sign(self, claims: dict[str, Any], *, typ: str) -> str: ...


class KeySigner:
    """A ``Signer`` over one private key. The key is kept in a name-mangled slot with no
    accessor; ``repr`` shows only the ``kid``."""

    __slots__ = ("__key", "_alg", "_kid", "_public")

    def __init__(self, key: AnyKey, alg: str) -> None:
        self.__key = key
        self._alg = alg
        self._kid = thumbprint(key)
        self._public = public_jwk(key, alg=alg)

    @property
    def kid(self) -> str:
        return self._kid

    @property
    def alg(self) -> str:
        return self._alg

    def public_jwk(self) -> dict[str, Any]:
        return dict(self._public)

    def sign(self, claims: dict[str, Any], *, typ: str) -> str:
        header = {"alg": self._alg, "kid": self._kid, "typ": typ}
        return jwt.encode(header, claims, self.__key, algorithms=[self._alg])

    def __repr__(self) -> str:
        return f"KeySigner(kid={self._kid!r}, alg={self._alg!r})"

    def __reduce__(self) -> Any:  # never pickled or copied out of the process
        raise TypeError("a signer cannot be serialized")
