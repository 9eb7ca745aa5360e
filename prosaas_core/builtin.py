"""The core's own plugin (entry point ``core``): what the core contributes through the same
hooks as every other plugin, so the registry, the generated ``chk_job_type``, the worker's
queues and the services come from one place.

- job type ``import_leads`` (queue ``imports``): a large CSV import (`prosaas_core.import_job`);
- service ``lead-imports-cleanup``: drops the staged CSV of imports whose job ended.
"""

from __future__ import annotations

from prosaas_core import JobType, Service, hookimpl


@hookimpl
def prosaas_job_types():
    from prosaas_core import import_job

    return [
        JobType(
            import_job.JOB_TYPE,
            import_job.import_leads,
            queue="imports",
            payload_model=import_job.ImportLeads,
            description="Import a large CSV of leads staged by POST /api/leads/import",
        )
    ]


@hookimpl
def prosaas_services():
    from prosaas_core import import_job

    return [Service("lead-imports-cleanup", import_job.cleanup_service)]
