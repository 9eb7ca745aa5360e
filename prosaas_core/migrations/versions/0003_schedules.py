"""Schedules: operators', businesses' and plugins' cron schedules, and their fired occurrences.

Revision ID: 0003_schedules
Revises: 0002_flow_control
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003_schedules"
down_revision = "0002_flow_control"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "prosaas_schedules",
        sa.Column("id", Id, primary_key=True),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column(
            "business_id",
            Id,
            sa.ForeignKey(
                "businesses.id",
                name="fk_prosaas_schedules_business_id_businesses",
                ondelete="CASCADE",
            ),
            nullable=True,
        ),
        sa.Column("cron", sa.String(length=120), nullable=True),
        sa.Column("job_type", sa.String(length=63), nullable=True),
        sa.Column("payload", Json, nullable=True),
        sa.Column("per_business", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("timezone", sa.String(length=64), server_default="UTC", nullable=False),
        sa.Column("catch_up", sa.String(length=8), server_default="skip", nullable=False),
        sa.Column("jitter", sa.Float(), server_default="0", nullable=False),
        sa.Column("paused", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("fired_through", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    )
    op.create_index(
        "uq_prosaas_schedules_owner_name",
        "prosaas_schedules",
        [sa.text("coalesce(business_id, 0)"), "name"],
        unique=True,
    )
    op.create_table(
        "prosaas_schedule_runs",
        sa.Column("id", Id, primary_key=True),
        sa.Column(
            "schedule_id",
            Id,
            sa.ForeignKey(
                "prosaas_schedules.id",
                name="fk_prosaas_schedule_runs_schedule_id_prosaas_schedules",
                ondelete="CASCADE",
            ),
            nullable=False,
        ),
        sa.Column("occurrence_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("business_id", sa.BigInteger(), nullable=False),
        sa.Column("job_id", sa.BigInteger(), nullable=True),
        sa.Column(
            "fired_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("fired_by", sa.String(length=200), nullable=True),
    )
    op.create_index(
        "uq_prosaas_schedule_runs_occurrence",
        "prosaas_schedule_runs",
        ["schedule_id", "occurrence_at", "business_id"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_table("prosaas_schedule_runs")
    op.drop_index("uq_prosaas_schedules_owner_name", table_name="prosaas_schedules")
    op.drop_table("prosaas_schedules")
