"""prosaas-broadcast: SMS/WhatsApp broadcasts to a business's leads.

Contributes the ``broadcast`` job type (queue ``messaging``), the ``/api/broadcasts`` and
Twilio status-callback blueprints, the ``broadcast-scheduler`` service (starts broadcasts whose
``scheduled_at`` has come), the Alembic branch ``broadcast``, the ``prosaas broadcasts`` CLI
group and the ``prosaas_broadcast_providers`` hook with three built-in providers: ``twilio``,
``webhook`` and ``log``. See the plugin README for payloads, settings and guarantees.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prosaas_core import JobType, Service, hookimpl

_pm: Any = None


def plugin_manager() -> Any:
    """The plugin manager this plugin was loaded into (set by ``prosaas_addhooks``)."""
    if _pm is None:
        from prosaas_core.plugins import get_plugin_manager

        return get_plugin_manager()
    return _pm


@hookimpl
def prosaas_addhooks(pm):
    global _pm
    from prosaas_broadcast import hookspecs

    hookspecs.ensure_hookspecs(pm)
    _pm = pm


@hookimpl
def prosaas_broadcast_providers():
    from prosaas_broadcast.providers.log import LogProvider
    from prosaas_broadcast.providers.twilio import TwilioProvider
    from prosaas_broadcast.providers.webhook import WebhookProvider

    return [TwilioProvider, WebhookProvider, LogProvider]


@hookimpl
def prosaas_job_types():
    from prosaas_broadcast import jobs

    return [
        JobType(
            "broadcast",
            jobs.broadcast,
            queue="messaging",
            payload_model=jobs.BroadcastPayload,
            description="Send a message to the selected leads of a business, rate-limited",
            max_attempts=5,
        )
    ]


def _schedule(ctx):
    from prosaas_broadcast.scheduler import run

    run(ctx)


@hookimpl
def prosaas_services():
    return [Service("broadcast-scheduler", _schedule)]


@hookimpl
def prosaas_blueprints():
    from prosaas_broadcast.api import bp
    from prosaas_broadcast.callbacks import bp as callbacks_bp

    return [bp, callbacks_bp]


@hookimpl
def prosaas_migrations():
    return [str(Path(__file__).parent / "migrations")]


@hookimpl
def prosaas_cli(cli):
    from prosaas_broadcast.cli import broadcasts

    cli.add_command(broadcasts)
