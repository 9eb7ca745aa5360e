"""receipts: the receipts table.

Revision ID: r001_receipts
Revises:
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "r001_receipts"
down_revision = None
branch_labels = ("receipts",)
depends_on = "0001_core"

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets 64-bit ids.
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "receipts",
        sa.Column("id", Id, nullable=False),
        sa.Column("business_id", sa.BigInteger(), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), server_default="USD", nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["business_id"],
            ["businesses.id"],
            name="fk_receipts_business_id_businesses",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_receipts"),
    )
    # the delete job pages through one business's receipts by id
    op.create_index("ix_receipts_business_id_id", "receipts", ["business_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_receipts_business_id_id", table_name="receipts")
    op.drop_table("receipts")
