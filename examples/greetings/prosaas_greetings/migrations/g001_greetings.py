"""greetings: the greetings table.

Revision ID: g001_greetings
Revises:
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "g001_greetings"
down_revision = None  # the first revision of this plugin's own branch
branch_labels = ("greetings",)
depends_on = "0001_core"  # businesses must exist first


def upgrade() -> None:
    op.create_table(
        "greetings",
        sa.Column("business_id", sa.BigInteger(), nullable=False),
        sa.Column("job_id", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(["business_id"], ["businesses.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", "seq", name="pk_greetings"),
    )
    op.create_index("ix_greetings_business_id", "greetings", ["business_id", "job_id"])


def downgrade() -> None:
    op.drop_index("ix_greetings_business_id", table_name="greetings")
    op.drop_table("greetings")
