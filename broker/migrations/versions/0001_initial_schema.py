"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-23 04:54:30.872808
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "admin_tokens",
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("namespaces", sa.JSON(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=True),
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("token_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("created_by", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("revoked_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "agents",
        sa.Column("spiffe_id", sqlmodel.sql.sqltypes.AutoString(length=2048), nullable=False),
        sa.Column("owner", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("description", sqlmodel.sql.sqltypes.AutoString(length=1024), nullable=False),
        sa.Column("enrollment_expires_at", sa.Float(), nullable=True),
        sa.Column(
            "status", sa.Enum("active", "suspended", "revoked", name="status"), nullable=False
        ),
        sa.Column("charter_version", sa.Integer(), nullable=False),
        sa.Column("enrolled_by", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("spiffe_id"),
    )
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "audit_records",
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("decision", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("gateway", sqlmodel.sql.sqltypes.AutoString(length=2048), nullable=True),
        sa.Column("agent", sqlmodel.sql.sqltypes.AutoString(length=2048), nullable=True),
        sa.Column("subject", sqlmodel.sql.sqltypes.AutoString(length=2048), nullable=True),
        sa.Column("tool", sqlmodel.sql.sqltypes.AutoString(length=2048), nullable=True),
        sa.Column("scope", sqlmodel.sql.sqltypes.AutoString(length=4096), nullable=True),
        sa.Column("txn", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("jti", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("prev_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    with op.batch_alter_table("audit_records", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_records_agent"), ["agent"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_records_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_records_gateway"), ["gateway"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_records_jti"), ["jti"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_records_subject"), ["subject"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_records_tool"), ["tool"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_records_txn"), ["txn"], unique=False)

    op.create_table(
        "charter_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("agent_spiffe_id", sqlmodel.sql.sqltypes.AutoString(length=2048), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("hash", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("created_by", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("agent_spiffe_id", "version"),
    )
    with op.batch_alter_table("charter_versions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_charter_versions_agent_spiffe_id"), ["agent_spiffe_id"], unique=False
        )

    op.create_table(
        "gateways",
        sa.Column("client_id", sqlmodel.sql.sqltypes.AutoString(length=2048), nullable=False),
        sa.Column(
            "auth_method",
            sa.Enum("jwt_spiffe", "private_key_jwt", name="gatewayauthmethod"),
            nullable=False,
        ),
        sa.Column("description", sqlmodel.sql.sqltypes.AutoString(length=1024), nullable=False),
        sa.Column("agent_namespaces", sa.JSON(), nullable=False),
        sa.Column("token_types", sa.JSON(), nullable=False),
        sa.Column("jwks", sa.JSON(), nullable=True),
        sa.Column(
            "status", sa.Enum("active", "suspended", "revoked", name="status"), nullable=False
        ),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("client_id"),
    )
    op.create_table(
        "registry_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "signing_keys",
        sa.Column("kid", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("alg", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("state", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("activated_at", sa.Float(), nullable=True),
        sa.Column("retired_at", sa.Float(), nullable=True),
        sa.Column("publish_until", sa.Float(), nullable=True),
        sa.Column("public_jwk", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("private_key_sealed", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("kid"),
    )
    with op.batch_alter_table("signing_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_signing_keys_state"), ["state"], unique=False)

    op.create_table(
        "trust_domains",
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column(
            "source",
            sa.Enum("file", "endpoint", "workload_api", "inline", name="bundlesourcekind"),
            nullable=False,
        ),
        sa.Column("location", sqlmodel.sql.sqltypes.AutoString(length=2048), nullable=True),
        sa.Column("bundle", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("trust_domains")
    with op.batch_alter_table("signing_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_signing_keys_state"))

    op.drop_table("signing_keys")
    op.drop_table("registry_version")
    op.drop_table("gateways")
    with op.batch_alter_table("charter_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_charter_versions_agent_spiffe_id"))

    op.drop_table("charter_versions")
    with op.batch_alter_table("audit_records", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_records_txn"))
        batch_op.drop_index(batch_op.f("ix_audit_records_tool"))
        batch_op.drop_index(batch_op.f("ix_audit_records_subject"))
        batch_op.drop_index(batch_op.f("ix_audit_records_jti"))
        batch_op.drop_index(batch_op.f("ix_audit_records_gateway"))
        batch_op.drop_index(batch_op.f("ix_audit_records_at"))
        batch_op.drop_index(batch_op.f("ix_audit_records_agent"))

    op.drop_table("audit_records")
    op.drop_table("audit_head")
    op.drop_table("agents")
    op.drop_table("admin_tokens")
