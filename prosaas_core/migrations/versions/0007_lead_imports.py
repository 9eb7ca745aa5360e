"""Large CSV imports run as a background job: the staged CSV and the import's job.

Revision ID: 0007_lead_imports
Revises: 0006_history
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007_lead_imports"
down_revision = "0006_history"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # No foreign key to background_jobs: job rows may be purged by retention long after the
    # import, and nothing else needs the link but the clean-up of a finished job's chunks.
    with op.batch_alter_table("lead_imports") as batch:
        batch.add_column(sa.Column("job_id", _ID, nullable=True))
        batch.add_column(
            sa.Column(
                "columns",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )
    op.create_table(
        "lead_import_chunks",
        sa.Column("id", _ID, nullable=False),
        sa.Column("import_id", _ID, nullable=False),
        sa.Column("first_line", sa.Integer(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["import_id"],
            ["lead_imports.id"],
            name=op.f("fk_lead_import_chunks_import_id_lead_imports"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lead_import_chunks")),
    )
    op.create_index("ix_lead_import_chunks_import_id_id", "lead_import_chunks", ["import_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_lead_import_chunks_import_id_id", table_name="lead_import_chunks")
    op.drop_table("lead_import_chunks")
    with op.batch_alter_table("lead_imports") as batch:
        batch.drop_column("columns")
        batch.drop_column("job_id")
