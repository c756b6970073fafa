"""tool registry and SPIFFE namespace bounds

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 10:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tools",
        sa.Column("tool_id", sqlmodel.sql.sqltypes.AutoString(length=2048), nullable=False),
        sa.Column("source", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("document_hash", sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
        sa.Column("fetched_at", sa.Float(), nullable=True),
        sa.Column("fresh_until", sa.Float(), nullable=True),
        sa.Column("usable_until", sa.Float(), nullable=True),
        sa.Column("created_by", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("tool_id"),
    )
    op.create_table(
        "namespace_bounds",
        sa.Column("pattern", sqlmodel.sql.sqltypes.AutoString(length=2048), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("max_risk", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("description", sqlmodel.sql.sqltypes.AutoString(length=1024), nullable=False),
        sa.Column("created_by", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("pattern"),
    )


def downgrade() -> None:
    op.drop_table("namespace_bounds")
    op.drop_table("tools")
