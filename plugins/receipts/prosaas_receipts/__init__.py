"""prosaas-receipts: a business's receipts in the plugin's own ``receipts`` table (its own
Alembic branch, ``receipts``), and the ``delete_receipts_all`` job type that deletes every receipt
of a business in batches.

Receipts belong to the business, not to a lead: no foreign key to ``leads``, so deleting leads
never touches them (and does not pay a per-row trigger for them).
"""

from __future__ import annotations

from pathlib import Path

from prosaas_core import JobType, hookimpl


@hookimpl
def prosaas_job_types():
    # imported here: `prosaas --help` loads every plugin and must not pay for SQLAlchemy
    from prosaas_receipts import jobs

    return [
        JobType(
            "delete_receipts_all",
            jobs.delete_receipts_all,
            queue="maintenance",
            payload_model=jobs.DeleteReceiptsAll,
            description="Delete every receipt of a business, in batches",
            unique_per_business=True,
        )
    ]


@hookimpl
def prosaas_blueprints():
    from prosaas_receipts.api import bp

    return [bp]


@hookimpl
def prosaas_migrations():
    return [str(Path(__file__).parent / "migrations")]
