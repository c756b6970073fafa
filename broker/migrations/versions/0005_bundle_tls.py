"""bundle endpoint profiles (https_web with a CA file, https_spiffe), the last good bundle
and refresh status of each trust domain, and a CA file per trusted issuer

Revision ID: 0005_bundle_tls
Revises: 0004
Create Date: 2026-12-07 05:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0005_bundle_tls"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("trust_domains", schema=None) as batch_op:
        batch_op.add_column(sa.Column(
            "endpoint_profile", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True))
        batch_op.add_column(sa.Column(
            "endpoint_spiffe_id", sqlmodel.sql.sqltypes.AutoString(length=2048), nullable=True))
        batch_op.add_column(sa.Column(
            "ca_file", sqlmodel.sql.sqltypes.AutoString(length=4096), nullable=True))
        batch_op.add_column(sa.Column(
            "latest_bundle", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(sa.Column("refresh_status", sa.JSON(), nullable=True))
    with op.batch_alter_table("trusted_issuers", schema=None) as batch_op:
        batch_op.add_column(sa.Column(
            "ca_file", sqlmodel.sql.sqltypes.AutoString(length=4096), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("trusted_issuers", schema=None) as batch_op:
        batch_op.drop_column("ca_file")
    with op.batch_alter_table("trust_domains", schema=None) as batch_op:
        batch_op.drop_column("refresh_status")
        batch_op.drop_column("latest_bundle")
        batch_op.drop_column("ca_file")
        batch_op.drop_column("endpoint_spiffe_id")
        batch_op.drop_column("endpoint_profile")
