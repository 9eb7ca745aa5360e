"""recordings: the recording_tasks table (durable download tasks).

Revision ID: r001_recordings
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "r001_recordings"
down_revision = None
branch_labels = ("recordings",)
depends_on = "0001_core"

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "recording_tasks",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("business_id", sa.BigInteger(), nullable=False),
        sa.Column("call_sid", sa.String(64), nullable=False),
        sa.Column("recording_sid", sa.String(64), nullable=False),
        sa.Column("recording_url", sa.Text(), nullable=False),
        sa.Column("duration", sa.Integer()),
        sa.Column("status", sa.String(16), nullable=False, server_default="queued"),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column(
            "run_after", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("lease_until", sa.DateTime(timezone=True)),
        sa.Column("worker", sa.String(200)),
        # bumped on every claim: a worker that lost its lease can no longer write
        sa.Column("fence", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text()),
        sa.Column("file_path", sa.Text()),
        sa.Column("bytes", sa.BigInteger()),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.ForeignKeyConstraint(
            ["business_id"],
            ["businesses.id"],
            name="fk_recording_tasks_business_id_businesses",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("recording_sid", name="uq_recording_tasks_recording_sid"),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'done', 'failed')", name="ck_recording_tasks_status"
        ),
    )
    # The claim query scans due tasks by (status, run_after); the API lists by business.
    op.create_index(
        "ix_recording_tasks_status_run_after", "recording_tasks", ["status", "run_after"]
    )
    op.create_index(
        "ix_recording_tasks_business_id_status", "recording_tasks", ["business_id", "status"]
    )
    op.create_index("ix_recording_tasks_call_sid", "recording_tasks", ["call_sid"])


def downgrade() -> None:
    op.drop_table("recording_tasks")
