"""Per-business flow control: parked jobs and per-business limit overrides.

Revision ID: 0002_flow_control
Revises: 0001_core
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_flow_control"
down_revision = "0001_core"
branch_labels = None
depends_on = None

_PARKED = "parked IS NOT NULL AND status = 'queued'"


def upgrade() -> None:
    # A nullable column without a default: a catalog-only change on PostgreSQL (no rewrite).
    with op.batch_alter_table("background_jobs") as batch:
        batch.add_column(sa.Column("parked", sa.String(length=200), nullable=True))
    op.create_index(
        "ix_background_jobs_parked",
        "background_jobs",
        ["job_type", "business_id", "id"],
        postgresql_where=sa.text(_PARKED),
        sqlite_where=sa.text(_PARKED),
    )
    op.create_table(
        "prosaas_flow_limits",
        sa.Column("business_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite")),
        sa.Column("job_type", sa.String(length=63), nullable=False),
        sa.Column("concurrency", sa.Integer(), nullable=True),
        sa.Column("rate", sa.String(length=32), nullable=True),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["business_id"],
            ["businesses.id"],
            name=op.f("fk_prosaas_flow_limits_business_id_businesses"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("business_id", "job_type", name=op.f("pk_prosaas_flow_limits")),
    )


def downgrade() -> None:
    op.drop_table("prosaas_flow_limits")
    op.drop_index("ix_background_jobs_parked", table_name="background_jobs")
    with op.batch_alter_table("background_jobs") as batch:
        batch.drop_column("parked")
