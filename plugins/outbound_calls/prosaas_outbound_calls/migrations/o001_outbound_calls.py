"""outbound_calls: campaigns, targets, do-not-call list, caller ids, per-business caps.

Revision ID: o001_outbound_calls
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "o001_outbound_calls"
down_revision = None
branch_labels = ("outbound_calls",)
depends_on = "0001_core"

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _ts(name: str, nullable: bool = False) -> sa.Column:
    default = None if nullable else sa.func.now()
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable, server_default=default)


def _business_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["business_id"],
        ["businesses.id"],
        name=f"fk_{table}_business_id_businesses",
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "outbound_campaigns",
        sa.Column("id", Id, primary_key=True, autoincrement=False),
        sa.Column("business_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(200)),
        sa.Column("state", sa.String(16), nullable=False, server_default="running"),
        sa.Column("prepared", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("caller_id", sa.String(32), nullable=False),
        sa.Column("twiml_url", sa.Text(), nullable=False),
        sa.Column("max_concurrent", sa.Integer(), nullable=False),
        sa.Column("calls_per_second", sa.Float(), nullable=False),
        sa.Column("record", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("machine_detection", sa.String(32)),
        sa.Column("retry_attempts", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("retry_spacing", sa.Float(), nullable=False, server_default="300"),
        sa.Column("retry_on", sa.String(64), nullable=False, server_default="busy,no-answer"),
        sa.Column("selection", sa.JSON()),
        sa.Column("total_leads", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("to_call", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("skipped_invalid", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("skipped_dnc", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("skipped_duplicate", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("error", sa.Text()),
        _ts("created_at"),
        _ts("updated_at"),
        _ts("finished_at", nullable=True),
        _business_fk("outbound_campaigns"),
        sa.CheckConstraint(
            "state IN ('running', 'paused', 'cancelled', 'completed', 'failed')",
            name="ck_outbound_campaigns_state",
        ),
    )
    op.create_index(
        "ix_outbound_campaigns_business_id_id", "outbound_campaigns", ["business_id", "id"]
    )
    op.create_index("ix_outbound_campaigns_state", "outbound_campaigns", ["state"])

    op.create_table(
        "outbound_targets",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("campaign_id", sa.BigInteger(), nullable=False),
        sa.Column("business_id", sa.BigInteger(), nullable=False),
        sa.Column("lead_id", sa.BigInteger()),
        sa.Column("raw_phone", sa.String(32)),
        sa.Column("phone", sa.String(32)),
        sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("skip_reason", sa.String(32)),
        sa.Column("call_sid", sa.String(64)),
        sa.Column("call_status", sa.String(32)),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        # a fresh token per claim: callbacks and the dialer's own writes name the attempt
        sa.Column("attempt_token", sa.String(32)),
        sa.Column("slot_token", sa.String(32)),
        _ts("next_attempt_at"),
        _ts("claimed_at", nullable=True),
        _ts("dialed_at", nullable=True),
        _ts("finished_at", nullable=True),
        sa.Column("answered_by", sa.String(32)),
        sa.Column("duration", sa.Integer()),
        sa.Column("error", sa.Text()),
        _ts("created_at"),
        _ts("updated_at"),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["outbound_campaigns.id"],
            name="fk_outbound_targets_campaign_id_outbound_campaigns",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["lead_id"],
            ["leads.id"],
            name="fk_outbound_targets_lead_id_leads",
            ondelete="SET NULL",
        ),
        _business_fk("outbound_targets"),
        sa.UniqueConstraint("campaign_id", "lead_id", name="uq_outbound_targets_campaign_id_lead"),
        sa.CheckConstraint(
            "status IN ('pending', 'dialing', 'live', 'completed', 'busy', 'no-answer', "
            "'failed', 'canceled', 'skipped', 'cancelled')",
            name="ck_outbound_targets_status",
        ),
    )
    # the dialer's claim: a campaign's pending targets in id order
    op.create_index(
        "ix_outbound_targets_campaign_id_status_id",
        "outbound_targets",
        ["campaign_id", "status", "id"],
    )
    # the sweep: claims and live calls by age
    op.create_index(
        "ix_outbound_targets_status_claimed_at", "outbound_targets", ["status", "claimed_at"]
    )
    op.create_index("ix_outbound_targets_call_sid", "outbound_targets", ["call_sid"])
    # a number is called once per campaign, whichever leads share it
    op.create_index(
        "uq_outbound_targets_campaign_id_phone",
        "outbound_targets",
        ["campaign_id", "phone"],
        unique=True,
        postgresql_where=sa.text("skip_reason IS NULL"),
        sqlite_where=sa.text("skip_reason IS NULL"),
    )

    op.create_table(
        "outbound_do_not_call",
        sa.Column("business_id", sa.BigInteger(), primary_key=True),
        sa.Column("phone", sa.String(32), primary_key=True),
        sa.Column("reason", sa.String(200)),
        _ts("created_at"),
        _business_fk("outbound_do_not_call"),
    )
    op.create_table(
        "outbound_caller_ids",
        sa.Column("business_id", sa.BigInteger(), primary_key=True),
        sa.Column("phone", sa.String(32), primary_key=True),
        sa.Column("label", sa.String(200)),
        _ts("created_at"),
        _business_fk("outbound_caller_ids"),
    )
    op.create_table(
        "outbound_business_limits",
        sa.Column("business_id", sa.BigInteger(), primary_key=True),
        sa.Column("max_concurrent", sa.Integer()),
        sa.Column("max_calls_per_second", sa.Float()),
        _ts("updated_at"),
        _business_fk("outbound_business_limits"),
    )


def downgrade() -> None:
    for table in (
        "outbound_business_limits",
        "outbound_caller_ids",
        "outbound_do_not_call",
        "outbound_targets",
        "outbound_campaigns",
    ):
        op.drop_table(table)
