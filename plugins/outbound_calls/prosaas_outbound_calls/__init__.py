"""prosaas outbound calls: call campaigns paced by per-business live-call slots and call rate.

- job type ``enqueue_outbound_calls`` (queue ``calls``): checks the payload and creates the
  campaign with one target per selected lead (`prosaas_outbound_calls.jobs`);
- service ``outbound-dialer`` (every worker): dials pending targets as slots free up
  (`prosaas_outbound_calls.dialer`);
- blueprints: the status callback webhook and ``/api/outbound-calls``;
- Alembic branch ``outbound_calls``; CLI group ``prosaas outbound-calls``.

Settings: see `prosaas_outbound_calls.config` and the plugin README.
"""

from __future__ import annotations

from pathlib import Path

from prosaas_core import JobType, Service, hookimpl


def _run(ctx):
    from prosaas_outbound_calls.dialer import run

    run(ctx)


def _pending(ctx) -> int:
    from prosaas_outbound_calls.dialer import pending

    return pending(ctx)


def _handler(ctx):
    from prosaas_outbound_calls.jobs import enqueue_outbound_calls

    return enqueue_outbound_calls(ctx)


@hookimpl
def prosaas_job_types():
    from prosaas_outbound_calls.payload import OutboundCalls

    return [
        JobType(
            "enqueue_outbound_calls",
            _handler,
            queue="calls",
            payload_model=OutboundCalls,
            description="Create an outbound call campaign: one target per selected lead",
        )
    ]


@hookimpl
def prosaas_services():
    return [Service("outbound-dialer", _run, pending=_pending)]


@hookimpl
def prosaas_blueprints():
    from prosaas_outbound_calls.api import bp as api_bp
    from prosaas_outbound_calls.callbacks import bp as callbacks_bp

    return [callbacks_bp, api_bp]


@hookimpl
def prosaas_migrations():
    return [str(Path(__file__).parent / "migrations")]


@hookimpl
def prosaas_cli(cli):
    from prosaas_outbound_calls.cli import group

    cli.add_command(group)
