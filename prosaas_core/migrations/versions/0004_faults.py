"""Fault recovery: per-worker leases, and partial indexes for the sweeper's scans.

Revision ID: 0004_faults
Revises: 0003_schedules
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from prosaas_core.migrate import online_index

revision = "0004_faults"
down_revision = "0003_schedules"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # the sweeper's keyset over queued rows and its rescue of running rows stay index scans
    # however many finished rows the table holds. Built CONCURRENTLY (writers never wait) and
    # first, so a migrator killed after the builds re-runs this revision cleanly.
    with online_index.block():
        online_index.create(
            "ix_background_jobs_queued_id", "background_jobs", ["id"], where="status = 'queued'"
        )
        online_index.create(
            "ix_background_jobs_running_worker",
            "background_jobs",
            ["worker"],
            where="status = 'running'",
        )
    op.create_table(
        "prosaas_worker_leases",
        sa.Column("worker", sa.String(length=200), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "renewed_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("worker", name=op.f("pk_prosaas_worker_leases")),
    )


def downgrade() -> None:
    op.drop_index("ix_background_jobs_running_worker", table_name="background_jobs")
    op.drop_index("ix_background_jobs_queued_id", table_name="background_jobs")
    op.drop_table("prosaas_worker_leases")
