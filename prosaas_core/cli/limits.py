"""``prosaas limits``: per-business flow limits of job types, and what they hold back now."""

from __future__ import annotations

import click

from prosaas_core.cli.common import UserError, echo_json, pass_runtime


@click.group()
def limits() -> None:
    """Per-business concurrency and rate limits of job types."""


@limits.command("set")
@click.argument("job_type")
@click.option("--business", "business_id", type=int, required=True, help="Business id.")
@click.option("--concurrency", type=click.IntRange(1, 100_000), help="Jobs running at once.")
@click.option("--rate", help="Starts per period: N/s, N/min or N/h.")
@click.option("--json", "as_json", is_flag=True, help="Print the override as a JSON object.")
@pass_runtime
def set_(rt, job_type, business_id, concurrency, rate, as_json) -> None:
    """Override JOB_TYPE's limits for one business (takes effect within one lease)."""
    from prosaas_core.errors import ConfigError, NotFoundError, UnknownJobTypeError
    from prosaas_core.jobs.flow import set_override

    if concurrency is None and rate is None:
        raise UserError("give --concurrency and/or --rate")
    try:
        row = set_override(rt, business_id, job_type, concurrency=concurrency, rate=rate)
    except (ConfigError, NotFoundError, UnknownJobTypeError) as exc:
        raise UserError(str(exc)) from None
    if as_json:
        echo_json(row)
        return
    parts = [
        f"concurrency {concurrency}" if concurrency else "",
        f"rate {row['rate']}" if rate else "",
    ]
    click.echo(f"{job_type} for business {business_id}: {', '.join(p for p in parts if p)}")


@limits.command("clear")
@click.argument("job_type")
@click.option("--business", "business_id", type=int, required=True, help="Business id.")
@pass_runtime
def clear(rt, job_type, business_id) -> None:
    """Remove a business's override: the job type's own limits apply again."""
    from prosaas_core.jobs.flow import clear_override

    if not clear_override(rt, business_id, job_type):
        raise UserError(f"no override of {job_type} for business {business_id}")
    click.echo(f"{job_type} for business {business_id}: the job type's own limits")


@limits.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@pass_runtime
def list_(rt, as_json) -> None:
    """List the per-business overrides."""
    from prosaas_core.jobs.flow import list_overrides

    rows = list_overrides(rt)
    if as_json:
        echo_json(rows)
        return
    click.echo(f"{'BUSINESS':>8}  {'TYPE':<24} {'CONCURRENCY':>11}  RATE")
    for r in rows:
        click.echo(
            f"{r['business_id']:>8}  {r['job_type']:<24} {r['concurrency'] or '-':>11}  "
            f"{r['rate'] or '-'}"
        )


@limits.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@pass_runtime
def status(rt, as_json) -> None:
    """What the limits hold back now, per business and job type."""
    from prosaas_core.jobs.flow import summary

    rows = summary(rt)
    if as_json:
        echo_json(rows)
        return
    print_summary(rows)


def print_summary(rows: list[dict]) -> None:
    """Slots held / limit, parked jobs and why, rate used / limit."""
    click.echo(f"{'BUSINESS':>8}  {'TYPE':<24} {'SLOTS':>7}  {'RATE':>12}  {'PARKED':>6}  WHY")
    for r in rows:
        slots = f"{r['slots_held']}/{r['concurrency']}" if r["concurrency"] else "-"
        rate = f"{r['rate_used']}/{r['rate']}" if r["rate"] else "-"
        why = "; ".join(f"{n}x {reason}" for reason, n in sorted(r["parked_reasons"].items()))
        click.echo(
            f"{r['business_id']:>8}  {r['job_type']:<24} {slots:>7}  {rate:>12}  "
            f"{r['parked']:>6}  {why}"
        )
