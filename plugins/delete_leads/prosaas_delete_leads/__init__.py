"""prosaas-delete-leads: bulk deletion of a business's leads, as two background job types.

- ``delete_leads``: a lead selection (``lead_ids``, a ``filter``, or ``{"all": true}``; see
  `prosaas_core.leads`).
- ``delete_imported_leads``: every lead of one CSV import (``{"import_id": 7}``).

Both run on the ``maintenance`` queue, one of each per business at a time. Dependants of a
deleted lead: its calls stay, with their history, detached (``lead_id`` NULL); nothing else in the
core is owned by a lead alone. A plugin whose table points at leads decides the same with its
foreign key (``ON DELETE SET NULL`` to keep history, ``CASCADE`` for rows owned by the lead).
"""

from __future__ import annotations

from prosaas_core import JobType, hookimpl


@hookimpl
def prosaas_job_types():
    # imported here: `prosaas --help` loads every plugin and must not pay for SQLAlchemy
    from prosaas_delete_leads import jobs

    return [
        JobType(
            "delete_leads",
            jobs.delete_leads,
            queue="maintenance",
            payload_model=jobs.DeleteLeads,
            description="Delete the selected leads of a business, in batches",
            unique_per_business=True,
        ),
        JobType(
            "delete_imported_leads",
            jobs.delete_imported_leads,
            queue="maintenance",
            payload_model=jobs.DeleteImportedLeads,
            description="Delete every lead of one import, in batches",
            unique_per_business=True,
        ),
    ]


@hookimpl
def prosaas_blueprints():
    from prosaas_delete_leads.api import bp

    return [bp]
