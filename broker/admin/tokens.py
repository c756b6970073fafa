"""Scoped admin tokens (DESIGN §1): random bearer secrets stored only as SHA-256 hashes.

A token is ``writ_adm_<id>_<secret>``; the id finds the row, the hash of the whole token is
compared in constant time. Registrar tokens may be limited to SPIFFE namespaces.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from enum import StrEnum

from pydantic import field_validator
from sqlalchemy import JSON, Column
from sqlmodel import Field, Session, SQLModel, col, select

from jwks.patterns import SpiffePattern

PREFIX = "writ_adm_"


class AdminScope(StrEnum):
    agents_read = "agents:read"
    agents_write = "agents:write"
    gateways_read = "gateways:read"
    gateways_write = "gateways:write"
    trust_domains_read = "trust-domains:read"
    trust_domains_write = "trust-domains:write"
    # tool registry and SPIFFE namespace bounds (broker/admin/tool_routes.py)
    tools_read = "tools:read"
    tools_write = "tools:write"
    bounds_read = "bounds:read"
    bounds_write = "bounds:write"
    # trusted user-token issuers (broker/admin/issuers.py)
    issuers_read = "issuers:read"
    issuers_write = "issuers:write"
    keys_read = "keys:read"
    keys_write = "keys:write"
    audit_read = "audit:read"
    # revocation and the kill switch; resource servers for /introspect
    revocations_read = "revocations:read"
    revocations_write = "revocations:write"
    resource_servers_read = "resource-servers:read"
    resource_servers_write = "resource-servers:write"
    admin_tokens_write = "admin-tokens:write"
    decisions_explain = "decisions:explain"


ALL_SCOPES = frozenset(s.value for s in AdminScope)


class AdminTokenBase(SQLModel):
    name: str = Field(max_length=128)
    scopes: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    # SPIFFE patterns a registrar may enroll agents under; empty = anywhere
    namespaces: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    expires_at: float | None = None


class AdminToken(AdminTokenBase, table=True):
    __tablename__ = "admin_tokens"
    id: str = Field(primary_key=True, max_length=32)
    token_hash: str = Field(max_length=64)
    created_at: float = 0.0
    created_by: str = ""
    revoked_at: float | None = None


class AdminTokenCreate(SQLModel):
    name: str = Field(min_length=1, max_length=128)
    scopes: list[str] = Field(min_length=1, max_length=32)
    namespaces: list[str] = Field(default_factory=list, max_length=32)
    expires_at: float | None = None

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: list[str]) -> list[str]:
        unknown = set(value) - ALL_SCOPES
        if unknown:
            raise ValueError(f"unknown admin scope(s): {sorted(unknown)}")
        return sorted(set(value))

    @field_validator("namespaces")
    @classmethod
    def _namespaces(cls, value: list[str]) -> list[str]:
        for p in value:
            SpiffePattern.parse(p)
        return value


class AdminTokenPublic(AdminTokenBase):
    id: str
    created_at: float
    created_by: str
    revoked_at: float | None


class AdminTokenIssued(AdminTokenPublic):
    """Returned once, at creation: the only time the secret is shown."""

    token: str


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_admin_token(session: Session, data: AdminTokenCreate, *, now: float,
                       by: str) -> AdminTokenIssued:
    token_id = secrets.token_hex(8)
    token = f"{PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
    row = AdminToken(id=token_id, token_hash=_hash(token), name=data.name, scopes=data.scopes,
                     namespaces=data.namespaces, expires_at=data.expires_at, created_at=now,
                     created_by=by)
    session.add(row)
    session.flush()
    return AdminTokenIssued(**AdminTokenPublic.model_validate(row, from_attributes=True)
                            .model_dump(), token=token)


def authenticate_admin_token(session: Session, token: str, *, now: float) -> AdminToken | None:
    """The token's row if the token is valid, unrevoked and unexpired; else None."""
    if not token.startswith(PREFIX) or len(token) > 200:
        return None
    token_id = token[len(PREFIX):].split("_", 1)[0]
    row = session.get(AdminToken, token_id)
    if row is None or not hmac.compare_digest(row.token_hash, _hash(token)):
        return None
    if row.revoked_at is not None or (row.expires_at is not None and now >= row.expires_at):
        return None
    return row


def list_admin_tokens(session: Session) -> list[AdminTokenPublic]:
    return [AdminTokenPublic.model_validate(r, from_attributes=True)
            for r in session.exec(select(AdminToken).order_by(col(AdminToken.created_at)))]


def revoke_admin_token(session: Session, token_id: str, *, now: float) -> bool:
    row = session.get(AdminToken, token_id)
    if row is None:
        return False
    row.revoked_at = now
    session.add(row)
    return True
