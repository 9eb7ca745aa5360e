"""broadcast: broadcasts, one row per recipient, and the opt-out list.

Revision ID: b001_broadcast
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "b001_broadcast"
down_revision = None
branch_labels = ("broadcast",)
depends_on = "0001_core"

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")


def _ts(name: str, nullable: bool = True) -> sa.Column:
    if nullable:
        return sa.Column(name, sa.DateTime(timezone=True))
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())


def _business_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["business_id"],
        ["businesses.id"],
        name=f"fk_{table}_business_id_businesses",
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "broadcasts",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("business_id", sa.BigInteger(), nullable=False),
        # the first job of the broadcast (its parts are other jobs); unique so that a job
        # enqueued without a broadcast row creates exactly one, whatever its retries
        sa.Column("job_id", sa.BigInteger()),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("template", sa.Text(), nullable=False),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("rate", sa.Float()),
        sa.Column("selection", Json, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="queued"),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("total", sa.Integer()),
        sa.Column("parts", sa.Integer()),
        sa.Column("error", sa.Text()),
        _ts("scheduled_at"),
        _ts("created_at", nullable=False),
        _ts("started_at"),
        _ts("finished_at"),
        _business_fk("broadcasts"),
        sa.UniqueConstraint("job_id", name="uq_broadcasts_job_id"),
        sa.CheckConstraint(
            "status IN ('scheduled', 'queued', 'preparing', 'sending', 'succeeded', "
            "'cancelled', 'failed')",
            name="ck_broadcasts_status",
        ),
    )
    op.create_index("ix_broadcasts_business_id_id", "broadcasts", ["business_id", "id"])
    op.create_index("ix_broadcasts_status_scheduled_at", "broadcasts", ["status", "scheduled_at"])
    op.create_table(
        "broadcast_recipients",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("broadcast_id", sa.BigInteger(), nullable=False),
        sa.Column("business_id", sa.BigInteger(), nullable=False),
        # no foreign key to leads: a deleted lead keeps its delivery history here
        sa.Column("lead_id", sa.BigInteger(), nullable=False),
        sa.Column("phone", sa.String(32)),
        sa.Column("body", sa.Text()),
        sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("skip_reason", sa.String(32)),
        sa.Column("provider_message_id", sa.String(128)),
        sa.Column("error", sa.Text()),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        # the claim of the attempt in flight: only its holder may record the outcome
        sa.Column("attempt_token", sa.String(32)),
        # pending: not before; sending: when a stuck attempt may be checked and taken over
        _ts("next_attempt_at"),
        _ts("sending_since"),
        _ts("sent_at"),
        _ts("delivered_at"),
        _ts("created_at", nullable=False),
        _ts("updated_at", nullable=False),
        sa.ForeignKeyConstraint(
            ["broadcast_id"],
            ["broadcasts.id"],
            name="fk_broadcast_recipients_broadcast_id_broadcasts",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint(
            "broadcast_id", "lead_id", name="uq_broadcast_recipients_broadcast_id_lead_id"
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'sending', 'sent', 'delivered', 'failed', 'skipped')",
            name="ck_broadcast_recipients_status",
        ),
    )
    # the senders claim by (broadcast, status); duplicates are found by (broadcast, phone)
    op.create_index(
        "ix_broadcast_recipients_broadcast_id_status_id",
        "broadcast_recipients",
        ["broadcast_id", "status", "id"],
    )
    op.create_index(
        "ix_broadcast_recipients_broadcast_id_phone",
        "broadcast_recipients",
        ["broadcast_id", "phone"],
    )
    op.create_index(
        "ix_broadcast_recipients_provider_message_id",
        "broadcast_recipients",
        ["provider_message_id"],
    )
    op.create_table(
        "broadcast_opt_outs",
        sa.Column("business_id", sa.BigInteger(), primary_key=True),
        sa.Column("phone", sa.String(32), primary_key=True),
        sa.Column("source", sa.String(64)),
        _ts("created_at", nullable=False),
        _business_fk("broadcast_opt_outs"),
    )


def downgrade() -> None:
    op.drop_table("broadcast_opt_outs")
    op.drop_table("broadcast_recipients")
    op.drop_table("broadcasts")
