"""History: rollups of finished jobs, indexes that keep every operational query flat as
``background_jobs`` grows, and a HOT-friendly table (fillfactor, autovacuum settings).

Revision ID: 0006_history
Revises: 0005_admin_tokens
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from prosaas_core.migrate import online_index

revision = "0006_history"
down_revision = "0005_admin_tokens"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
ACTIVE = "status IN ('queued', 'running')"

#: name -> (columns, partial condition). Built CONCURRENTLY: writers never wait for them.
INDEXES: dict[str, tuple[list[str], str | None]] = {
    # a business's jobs, newest first (GET /api/jobs, jobs list --business), and with a filter
    "ix_background_jobs_business_id_id": (["business_id", "id"], None),
    "ix_background_jobs_business_status_id": (["business_id", "status", "id"], None),
    "ix_background_jobs_business_type_id": (["business_id", "job_type", "id"], None),
    # jobs list --type, and the constraint plan's "which types do rows still use" (a loose
    # index scan: one probe per type, not one entry per row)
    "ix_background_jobs_job_type_id": (["job_type", "id"], None),
    # counts of the active rows by status and type (metrics, dashboard, doctor): replaces the
    # full (status, job_type) index, which every finished row stayed in forever
    "ix_background_jobs_active": (["status", "job_type", "queue"], ACTIVE),
}
OLD = "ix_background_jobs_status_job_type"

#: fillfactor leaves a fifth of each page free so a running job's progress, checkpoint and
#: heartbeat writes (no indexed column changes) are HOT updates on the same page. Vacuum and
#: analyze after 2% of the rows changed rather than 20%: the table churns at its active end
#: while most of it is history; insert-triggered vacuum keeps the visibility map fresh for the
#: index-only scans of counts.
STORAGE = {
    "fillfactor": "80",
    "autovacuum_vacuum_scale_factor": "0.02",
    "autovacuum_vacuum_threshold": "1000",
    "autovacuum_analyze_scale_factor": "0.02",
    "autovacuum_analyze_threshold": "1000",
    "autovacuum_vacuum_insert_scale_factor": "0.05",
}


def upgrade() -> None:
    # first, so that a migrator killed after the builds re-runs this revision cleanly
    with online_index.block():
        for name, (cols, where) in INDEXES.items():
            online_index.create(name, "background_jobs", cols, where=where)
        online_index.drop(OLD, "background_jobs")
    op.create_table(
        "prosaas_job_rollups",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("business_id", Id, nullable=False),
        sa.Column("job_type", sa.String(length=63), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("jobs", sa.BigInteger(), nullable=False),
        sa.Column("ran", sa.BigInteger(), nullable=False),
        sa.Column("duration_sum", sa.Float(), nullable=False),
        sa.Column("duration_max", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["business_id"],
            ["businesses.id"],
            name=op.f("fk_prosaas_job_rollups_business_id_businesses"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "day", "business_id", "job_type", "status", name=op.f("pk_prosaas_job_rollups")
        ),
    )
    op.create_index(
        "ix_prosaas_job_rollups_business_id_day", "prosaas_job_rollups", ["business_id", "day"]
    )
    op.create_table(
        "prosaas_job_totals",
        sa.Column("job_type", sa.String(length=63), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("jobs", sa.BigInteger(), nullable=False),
        sa.Column("ran", sa.BigInteger(), nullable=False),
        sa.Column("duration_sum", sa.Float(), nullable=False),
        # run times per bucket of prosaas_core.jobs.history.BUCKETS (not cumulative; +Inf last)
        sa.Column("buckets", Json, nullable=False),
        sa.PrimaryKeyConstraint("job_type", "status", name=op.f("pk_prosaas_job_totals")),
    )
    op.create_table(
        "prosaas_rollup_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("rolled_through", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prosaas_rollup_state")),
    )
    op.execute("INSERT INTO prosaas_rollup_state (id) VALUES (1)")
    if op.get_context().dialect.name == "postgresql":
        # SHARE UPDATE EXCLUSIVE: readers and writers go on; new pages get the fillfactor
        opts = ", ".join(f"{k} = {v}" for k, v in STORAGE.items())
        op.execute(f"ALTER TABLE background_jobs SET ({opts})")


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE background_jobs RESET ({', '.join(STORAGE)})")
    op.drop_table("prosaas_rollup_state")
    op.drop_table("prosaas_job_totals")
    op.drop_index("ix_prosaas_job_rollups_business_id_day", table_name="prosaas_job_rollups")
    op.drop_table("prosaas_job_rollups")
    with online_index.block():
        online_index.create(OLD, "background_jobs", ["status", "job_type"])
        for name in INDEXES:
            online_index.drop(name, "background_jobs")
