"""The signing-key table and its public model.

A key moves ``next`` → ``active`` → ``retired``; a retired key is published until
``publish_until`` and then pruned. The private key is stored only as PKCS#8 sealed by the
envelope with ``aad`` = its ``kid``. Times are epoch seconds from the injected clock.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from sqlmodel import AutoString, Field, SQLModel


class KeyState(StrEnum):
    next = "next"  # published, not yet signing
    active = "active"  # signing, published
    retired = "retired"  # published until publish_until, never signs again


class SigningKeyBase(SQLModel):
    kid: str = Field(primary_key=True, max_length=64)  # RFC 7638 thumbprint
    alg: str = Field(max_length=16)
    state: KeyState = Field(sa_type=AutoString, max_length=8, index=True)
    created_at: float
    activated_at: float | None = None
    retired_at: float | None = None
    publish_until: float | None = None


class SigningKey(SigningKeyBase, table=True):
    __tablename__ = "signing_keys"
    public_jwk: str  # JSON text, public members only
    private_key_sealed: bytes  # envelope.seal(kek, PKCS#8 DER, aad=kid)


class SigningKeyPublic(SigningKeyBase):
    """What an operator may see of a key: never a private member."""

    public_jwk: dict[str, Any]
