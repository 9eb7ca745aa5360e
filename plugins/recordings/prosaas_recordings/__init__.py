"""prosaas recordings: Twilio recording webhook, durable downloads, calls API.

Contributes the ``recording-worker`` service (every ``prosaas worker`` runs it), the webhook
and ``/api/calls`` blueprints, the ``recordings_retention`` job and its nightly per-business
schedule, its Alembic branch ``recordings`` and the ``prosaas_transcribe``
hook (see ``prosaas_recordings.hookspecs``). Settings: see ``prosaas_recordings.config``.
"""

from __future__ import annotations

from pathlib import Path

from prosaas_core import JobType, Schedule, Service, hookimpl


def _run(ctx):
    from prosaas_recordings.service import run

    run(ctx)


def _pending(ctx) -> int:
    from prosaas_recordings.service import pending

    return pending(ctx)


@hookimpl
def prosaas_addhooks(pm):
    from prosaas_recordings import hookspecs

    pm.add_hookspecs(hookspecs)


@hookimpl
def prosaas_services():
    return [Service("recording-worker", _run, pending=_pending)]


@hookimpl
def prosaas_job_types():
    from prosaas_recordings import retention

    return [
        JobType(
            "recordings_retention",
            retention.run,
            queue="maintenance",
            payload_model=retention.Retention,
            description="Delete a business's recording files older than its retention",
            unique_per_business=True,
        )
    ]


@hookimpl
def prosaas_schedules():
    # nightly, per business, spread over ten minutes so the businesses don't all start at
    # once; a night missed while no worker ran is made up once when one is back
    return [
        Schedule(
            "recordings-retention",
            cron="30 3 * * *",
            job_type="recordings_retention",
            per_business=True,
            catch_up="once",
            jitter=600,
        )
    ]


@hookimpl
def prosaas_blueprints():
    from prosaas_recordings.api import bp as api_bp
    from prosaas_recordings.webhook import bp as webhook_bp

    return [webhook_bp, api_bp]


@hookimpl
def prosaas_migrations():
    return [str(Path(__file__).parent / "migrations")]
