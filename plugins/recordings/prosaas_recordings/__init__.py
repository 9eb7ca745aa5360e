"""prosaas recordings: Twilio recording webhook, durable downloads, calls API.

Contributes the ``recording-worker`` service (every ``prosaas worker`` runs it), the webhook
and ``/api/calls`` blueprints, its Alembic branch ``recordings`` and the ``prosaas_transcribe``
hook (see ``prosaas_recordings.hookspecs``). Settings: see ``prosaas_recordings.config``.
"""

from __future__ import annotations

from pathlib import Path

from prosaas_core import Service, hookimpl


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
def prosaas_blueprints():
    from prosaas_recordings.api import bp as api_bp
    from prosaas_recordings.webhook import bp as webhook_bp

    return [webhook_bp, api_bp]


@hookimpl
def prosaas_migrations():
    return [str(Path(__file__).parent / "migrations")]
