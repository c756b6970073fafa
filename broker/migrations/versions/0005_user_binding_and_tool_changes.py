"""user-token binding (trusted issuers' allowed clients and agent namespaces) and pending
changes of fetched tool documents

Revision ID: 0005_binding
Revises: 0002, 0004
Create Date: 2026-12-07 05:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0005_binding"
down_revision: str | Sequence[str] | None = ("0002", "0004")
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # existing issuers get empty lists: deny by default until a registrar configures them
    # (docs/delegation.md "Binding user tokens", "Upgrading")
    with op.batch_alter_table("trusted_issuers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("allowed_clients", sa.JSON(), nullable=False,
                                      server_default="[]"))
        batch_op.add_column(sa.Column("agent_namespaces", sa.JSON(), nullable=False,
                                      server_default="[]"))
    with op.batch_alter_table("trusted_issuers", schema=None) as batch_op:
        batch_op.alter_column("allowed_clients", server_default=None)
        batch_op.alter_column("agent_namespaces", server_default=None)
    with op.batch_alter_table("tools", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pending_document", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column(
            "pending_hash", sqlmodel.sql.sqltypes.AutoString(length=80), nullable=True))
        batch_op.add_column(sa.Column("pending_changes", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("pending_since", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tools", schema=None) as batch_op:
        batch_op.drop_column("pending_since")
        batch_op.drop_column("pending_changes")
        batch_op.drop_column("pending_hash")
        batch_op.drop_column("pending_document")
    with op.batch_alter_table("trusted_issuers", schema=None) as batch_op:
        batch_op.drop_column("agent_namespaces")
        batch_op.drop_column("allowed_clients")
