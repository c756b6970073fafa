"""The durable side of revocation: the ``revocations`` table and its verbs.

A write bumps ``registry_version`` in the same transaction, so every replica reloads its
``RevocationSet`` within the snapshot's bound (PostgreSQL NOTIFY, else the version poll).
An entry is pruned once every token it could cover has expired.
"""

from __future__ import annotations

from pydantic import field_validator
from sqlalchemy import Index
from sqlmodel import AutoString, Field, Session, SQLModel, col, delete, select

from broker.revocation.revoked import (
    EXACT_KINDS,
    ISSUED_AFTER_GRACE_S,
    RevocationEntry,
    RevocationKind,
)
from jwks.patterns import parse_spiffe_id
from registry.store import bump_version

#: Tokens are checked against ``exp`` with this much leeway by verifiers.
EXPIRY_LEEWAY_S = 60.0


class RevocationBase(SQLModel):
    kind: RevocationKind = Field(sa_type=AutoString, max_length=16)
    value: str = Field(min_length=1, max_length=2048)
    reason: str = Field(default="", max_length=256)


class Revocation(RevocationBase, table=True):
    __tablename__ = "revocations"
    __table_args__ = (Index("ix_revocations_kind_value", "kind", "value"),)
    id: int | None = Field(default=None, primary_key=True)
    revoked_at: float
    expires_at: float = Field(index=True)
    revoked_by: str = Field(max_length=2048)


class RevocationCreate(RevocationBase):
    @field_validator("value")
    @classmethod
    def _value(cls, value: str) -> str:
        if any(ord(c) < 0x20 for c in value):
            raise ValueError("value must not contain control characters")
        return value


class RevocationPublic(RevocationBase):
    id: int
    revoked_at: float
    expires_at: float
    revoked_by: str


def check_value(kind: RevocationKind, value: str) -> None:
    """Agent and gateway entries name SPIFFE IDs; a typo must not pass silently."""
    if kind in (RevocationKind.agent, RevocationKind.gateway):
        parse_spiffe_id(value)  # raises InvalidPattern


def _public(row: Revocation) -> RevocationPublic:
    return RevocationPublic.model_validate(row, from_attributes=True)


def entry_expiry(
    kind: RevocationKind, revoked_at: float, max_token_ttl_s: float, token_exp: float | None
) -> float:
    """When every token the entry can cover has expired."""
    if kind is RevocationKind.jti and token_exp is not None:
        return token_exp + EXPIRY_LEEWAY_S
    # a txn's replacements never outlive their parent (DESIGN §2), issued before revocation
    grace = 0.0 if kind in EXACT_KINDS else ISSUED_AFTER_GRACE_S
    return revoked_at + grace + max_token_ttl_s + EXPIRY_LEEWAY_S


def create_revocation(
    session: Session,
    data: RevocationCreate,
    *,
    now: float,
    by: str,
    max_token_ttl_s: float,
    token_exp: float | None = None,
) -> RevocationPublic:
    check_value(data.kind, data.value)
    bump_version(session, "revocation", data.value)
    row = Revocation(
        kind=data.kind,
        value=data.value,
        reason=data.reason,
        revoked_at=now,
        expires_at=entry_expiry(data.kind, now, max_token_ttl_s, token_exp),
        revoked_by=by,
    )
    session.add(row)
    session.flush()
    return _public(row)


def list_revocations(
    session: Session,
    *,
    now: float,
    kind: RevocationKind | None = None,
    value: str | None = None,
    offset: int = 0,
    limit: int = 100,
) -> list[RevocationPublic]:
    """Live entries (not yet prunable), newest first."""
    stmt = select(Revocation).where(col(Revocation.expires_at) > now)
    if kind is not None:
        stmt = stmt.where(Revocation.kind == kind)
    if value is not None:
        stmt = stmt.where(Revocation.value == value)
    stmt = stmt.order_by(col(Revocation.id).desc()).offset(offset).limit(limit)
    return [_public(r) for r in session.exec(stmt)]


def load_live(session: Session, *, now: float) -> list[RevocationEntry]:
    """Every entry still covering a live token, for the in-memory set."""
    stmt = select(
        Revocation.kind, Revocation.value, Revocation.revoked_at, Revocation.expires_at
    ).where(col(Revocation.expires_at) > now)
    return [RevocationEntry(RevocationKind(k), v, r, e) for k, v, r, e in session.exec(stmt)]


def prune_revocations(session: Session, *, now: float) -> int:
    """Delete entries whose tokens have all expired; the caller commits."""
    result = session.exec(delete(Revocation).where(col(Revocation.expires_at) <= now))
    return int(result.rowcount or 0)
