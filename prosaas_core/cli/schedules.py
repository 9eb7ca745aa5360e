"""``prosaas schedules``: cron schedules of plugins, operators and businesses."""

from __future__ import annotations

import json

import click

from prosaas_core.cli.common import UserError, echo_json, pass_runtime


@click.group()
def schedules() -> None:
    """List, add, pause, resume and remove cron schedules."""


def _user_errors(fn, *args, **kwargs):
    from prosaas_core.errors import (
        ConflictError,
        NotFoundError,
        PayloadError,
        TimingError,
        UnknownJobTypeError,
    )

    try:
        return fn(*args, **kwargs)
    except PayloadError as exc:
        fields = "; ".join(
            f"{'.'.join(map(str, d['loc'])) or '(root)'}: {d['msg']}" for d in exc.details
        )
        raise UserError(f"invalid payload: {fields}") from None
    except (ConflictError, NotFoundError, TimingError, UnknownJobTypeError) as exc:
        raise UserError(str(exc)) from None


def _ref(value: str) -> str | int:
    return int(value) if value.isdigit() else value


@schedules.command("list")
@click.option("--business", "business_id", type=int, help="Only this business's own schedules.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@pass_runtime
def list_(rt, business_id, as_json) -> None:
    """Each schedule: last occurrence and its jobs, next occurrence, problems."""
    from prosaas_core.schedules import status

    rows = status(rt, business_id=business_id)
    if as_json:
        echo_json(rows)
        return
    click.echo(f"{'ID':>4}  {'NAME':<28} {'CRON':<16} {'SCOPE':<12} {'LAST':<26} NEXT")
    for r in rows:
        scope = "per business" if r["per_business"] else f"business {r['business_id']}"
        if r["source"] == "core":
            scope = "core"
        last = (r["last_occurrence"] or "-")[:25]
        jobs = ",".join(f"{k}={v}" for k, v in sorted(r["last_jobs"].items()))
        nxt = "paused" if r["paused"] else r["next_occurrence"]
        click.echo(
            f"{r['id']:>4}  {r['name']:<28} {r['cron']:<16} {scope:<12} {last:<26} {nxt}"
            + (f"  [{jobs}]" if jobs else "")
            + (f"  PROBLEM: {r['problem']}" if r["problem"] else "")
        )


@schedules.command()
@click.argument("name")
@click.option("--cron", required=True, help='Cron expression, e.g. "*/5 * * * *" (6th: seconds).')
@click.option("--job-type", required=True, help="The job type each occurrence enqueues.")
@click.option("--payload", default="{}", show_default=True, help="The jobs' payload, JSON.")
@click.option("--business", "business_id", type=int, help="Fire for this business only.")
@click.option("--per-business", is_flag=True, help="Fire once for every business.")
@click.option("--timezone", default="UTC", show_default=True, help="IANA time zone of the cron.")
@click.option(
    "--catch-up", type=click.Choice(["skip", "once", "all"]), default="skip", show_default=True
)
@click.option("--jitter", type=click.FloatRange(0, 3600), default=0.0, help="Spread, seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print the schedule as a JSON object.")
@pass_runtime
def add(rt, name, cron, job_type, payload, business_id, per_business, timezone, catch_up,
        jitter, as_json) -> None:  # fmt: skip
    """Add an operator's schedule NAME."""
    from prosaas_core import schedules as sched

    try:
        data = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise UserError(f"--payload is not valid JSON: {exc}") from None
    if per_business == (business_id is not None):
        raise UserError("give --business ID or --per-business")
    row = _user_errors(
        sched.add, rt, name, cron=cron, job_type=job_type, payload=data, business_id=business_id,
        per_business=per_business, timezone=timezone, catch_up=catch_up, jitter=jitter,
    )  # fmt: skip
    if as_json:
        echo_json(row)
    else:
        click.echo(f"schedule {row['id']} {name}: next {row['next_occurrence']}")


@schedules.command()
@click.argument("schedule")
@pass_runtime
def pause(rt, schedule) -> None:
    """Pause SCHEDULE (a name or an id): nothing fires until it is resumed."""
    from prosaas_core import schedules as sched

    _user_errors(sched.set_paused, rt, _ref(schedule), True)
    click.echo(f"schedule {schedule} paused")


@schedules.command()
@click.argument("schedule")
@pass_runtime
def resume(rt, schedule) -> None:
    """Resume SCHEDULE: it fires from its next occurrence (what fell while paused is skipped)."""
    from prosaas_core import schedules as sched

    _user_errors(sched.set_paused, rt, _ref(schedule), False)
    click.echo(f"schedule {schedule} resumed")


@schedules.command()
@click.argument("schedule")
@pass_runtime
def remove(rt, schedule) -> None:
    """Remove an operator's or a business's SCHEDULE (plugins' can only be paused)."""
    from prosaas_core import schedules as sched

    _user_errors(sched.remove, rt, _ref(schedule))
    click.echo(f"schedule {schedule} removed")
