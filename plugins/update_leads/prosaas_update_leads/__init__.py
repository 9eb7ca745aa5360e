"""prosaas-update-leads: bulk update of a business's leads as the ``update_leads`` job type.

Payload: a lead selection (``lead_ids``, a ``filter`` or ``{"all": true}``; see
`prosaas_core.leads`) and ``set``, the fields to write: any of ``status``, ``owner``, ``tags``,
``notes``. Runs on the ``maintenance`` queue.
"""

from __future__ import annotations

from prosaas_core import JobType, hookimpl


@hookimpl
def prosaas_job_types():
    # imported here: `prosaas --help` loads every plugin and must not pay for SQLAlchemy
    from prosaas_update_leads import jobs

    return [
        JobType(
            "update_leads",
            jobs.update_leads,
            queue="maintenance",
            payload_model=jobs.UpdateLeads,
            description="Set status, owner, tags or notes on the selected leads, in batches",
        )
    ]


@hookimpl
def prosaas_blueprints():
    from prosaas_update_leads.api import bp

    return [bp]
