"""Operator (admin) tokens for the dashboard, and an index for its throughput chart.

Revision ID: 0005_admin_tokens
Revises: 0004_faults
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from prosaas_core.migrate import online_index

revision = "0005_admin_tokens"
down_revision = "0004_faults"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The dashboard's "finished per minute, last hour" chart reads a time range of finished
    # jobs; without this it scans every finished row. job_type, status and queue ride along so
    # the count can come from the index alone. Built CONCURRENTLY (writers never wait) and
    # first, so a migrator killed after the build re-runs this revision cleanly.
    with online_index.block():
        online_index.create(
            "ix_background_jobs_finished_at",
            "background_jobs",
            ["finished_at", "job_type", "status", "queue"],
        )
    # Admin tokens live apart from business tokens: a business token can never become an
    # operator one, and the API's bearer lookup (api_tokens) never accepts an admin token.
    op.create_table(
        "prosaas_admin_tokens",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=12), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prosaas_admin_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_prosaas_admin_tokens_token_hash")),
    )


def downgrade() -> None:
    op.drop_index("ix_background_jobs_finished_at", table_name="background_jobs")
    op.drop_table("prosaas_admin_tokens")
