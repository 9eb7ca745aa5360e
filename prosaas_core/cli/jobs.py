"""``prosaas jobs``: enqueue, list, show, cancel, retry and watch background jobs."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from prosaas_core.cli.common import UserError, echo_json, pass_runtime
from prosaas_core.models import FINAL_STATUSES, JOB_STATUSES

#: exit codes of `jobs watch`
EXIT_FAILED = 1
EXIT_CANCELLED = 2
EXIT_TIMEOUT = 3


@click.group()
def jobs() -> None:
    """Enqueue, inspect, cancel, retry and watch background jobs."""


def _control():
    from prosaas_core.jobs import control

    return control


@jobs.command()
@click.argument("job_type")
@click.option("--business", "business_id", type=int, required=True, help="Business id.")
@click.option("--payload", default="{}", show_default=True, help="The payload, a JSON object.")
@click.option("--at", "run_at", help="Run at this time, ISO 8601 (UTC unless it has an offset).")
@click.option("--in", "delay", type=float, help="Run in this many seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print an object with the job's id.")
@pass_runtime
def enqueue(rt, job_type: str, business_id: int, payload: str, run_at, delay, as_json) -> None:
    """Enqueue a job of JOB_TYPE for a business; prints the new job's id."""
    from datetime import datetime

    from prosaas_core.errors import PayloadError, TimingError
    from prosaas_core.jobs.enqueue import enqueue as do_enqueue

    try:
        data = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise UserError(f"--payload is not valid JSON: {exc}") from None
    when = None
    if run_at is not None:
        try:
            when = datetime.fromisoformat(run_at)
        except ValueError:
            raise UserError(f"--at is not an ISO 8601 time: {run_at!r}") from None
    try:
        job = do_enqueue(rt, job_type, business_id, data, run_at=when, delay=delay)
    except TimingError as exc:
        raise UserError(str(exc).replace("run_at", "--at").replace("delay", "--in")) from None
    except PayloadError as exc:
        fields = "; ".join(
            f"{'.'.join(map(str, d['loc'])) or '(root)'}: {d['msg']}" for d in exc.details
        )
        raise UserError(f"invalid payload for {job_type!r}: {fields}") from None
    if as_json:
        echo_json(
            {
                "id": job.id,
                "status": job.status,
                "job_type": job.job_type,
                "business_id": job.business_id,
                "created": job.created,
                "pushed": job.pushed,
            }
        )
    else:
        click.echo(job.id)
        if not job.created:
            click.echo(f"job {job.id} was already {job.status}: not enqueued again", err=True)


@jobs.command("list")
@click.option("--business", "business_id", type=int, help="Only this business's jobs.")
@click.option(
    "--status",
    type=click.Choice(JOB_STATUSES),
    help="Only jobs with this status.",
)
@click.option("--type", "job_type", help="Only jobs of this type.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--before", "before_id", type=int, help="Only jobs with an id below this one.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@pass_runtime
def list_(rt, business_id, status, job_type, limit, before_id, as_json) -> None:
    """List jobs, newest first."""
    rows = _control().list_jobs(
        rt,
        business_id=business_id,
        status=status,
        job_type=job_type,
        limit=limit,
        before_id=before_id,
    )
    if as_json:
        echo_json(rows)
        return
    click.echo(f"{'ID':>8}  {'TYPE':<24} {'BUSINESS':>8}  {'STATUS':<10} {'TRIES':>5}  PROGRESS")
    for j in rows:
        click.echo(
            f"{j['id']:>8}  {j['job_type']:<24} {j['business_id']:>8}  {j['status']:<10} "
            f"{j['attempts']:>2}/{j['max_attempts']:<2}  {_progress_text(j)}"
            + (f"  parked: {j['parked']}" if j.get("parked") else "")
        )
    _flow_footer(rt)


def _flow_footer(rt) -> None:
    """Below the list: what per-business flow limits hold back now, if anything."""
    from prosaas_core.cli.limits import print_summary
    from prosaas_core.jobs.flow import summary

    try:
        rows = summary(rt)
    except Exception as exc:  # Redis away: the list itself is still right
        click.echo(f"(flow limits unavailable: {type(exc).__name__})", err=True)
        return
    if rows:
        click.echo("")
        click.echo("flow limits:")
        print_summary(rows)


def _progress_text(j: dict[str, Any]) -> str:
    return f"{j['processed']}/{j['total']}" if j["total"] is not None else str(j["processed"])


def _get(rt, job_id: int, business_id: int | None) -> dict[str, Any]:
    from prosaas_core.errors import NotFoundError

    try:
        return _control().get_job(rt, job_id, business_id=business_id)
    except NotFoundError as exc:
        raise UserError(str(exc)) from None


@jobs.command()
@click.argument("job_id", type=int)
@click.option("--business", "business_id", type=int, help="Fail unless the job is this business's.")
@click.option("--json", "as_json", is_flag=True, help="Print the job as a JSON object.")
@pass_runtime
def show(rt, job_id: int, business_id: int | None, as_json: bool) -> None:
    """Show one job."""
    job = _get(rt, job_id, business_id)
    if as_json:
        echo_json(job)
        return
    for key, value in job.items():
        if value is None or key == "error":
            continue
        if isinstance(value, dict | list):
            value = json.dumps(value, sort_keys=True)
        click.echo(f"{key:>16}: {value}")
    if job["error"]:
        click.echo(f"{'error':>16}:\n{job['error']}")


def _steer(rt, action: str, job_id: int, business_id: int | None, as_json: bool) -> None:
    from prosaas_core.errors import ConflictError, NotFoundError

    fn = getattr(_control(), f"{action}_job")
    try:
        job = fn(rt, job_id, business_id=business_id)
    except (NotFoundError, ConflictError) as exc:
        raise UserError(str(exc)) from None
    if as_json:
        echo_json(job)
    elif action == "cancel" and job["status"] == "running":
        click.echo(f"job {job_id}: cancel requested; it stops at its next checkpoint")
    else:
        click.echo(f"job {job_id}: {job['status']}")


@jobs.command()
@click.argument("job_id", type=int)
@click.option("--business", "business_id", type=int, help="Fail unless the job is this business's.")
@click.option("--json", "as_json", is_flag=True, help="Print the job as a JSON object.")
@pass_runtime
def cancel(rt, job_id: int, business_id: int | None, as_json: bool) -> None:
    """Cancel a job: a queued one at once, a running one at its next should_stop()."""
    _steer(rt, "cancel", job_id, business_id, as_json)


@jobs.command()
@click.argument("job_id", type=int)
@click.option("--business", "business_id", type=int, help="Fail unless the job is this business's.")
@click.option("--json", "as_json", is_flag=True, help="Print the job as a JSON object.")
@pass_runtime
def retry(rt, job_id: int, business_id: int | None, as_json: bool) -> None:
    """Queue a failed or cancelled job again (it resumes from its last checkpoint)."""
    _steer(rt, "retry", job_id, business_id, as_json)


def _bar(j: dict[str, Any], rate: float | None, width: int = 30) -> str:
    done, total = j["processed"] or 0, j["total"]
    if total:
        frac = min(done / total, 1.0)
        filled = int(frac * width)
        bar = "[" + "#" * filled + "-" * (width - filled) + f"] {done}/{total} {frac:6.1%}"
    else:
        bar = f"[{'?' * width}] {done}"
    if rate:
        bar += f"  {rate:,.1f}/s"
        if total and done < total:
            bar += f"  ETA {_duration((total - done) / rate)}"
    return f"job {j['id']} {j['status']:<9} {bar}"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


@jobs.command()
@click.argument("job_id", type=int)
@click.option("--business", "business_id", type=int, help="Fail unless the job is this business's.")
@click.option("--interval", type=click.FloatRange(0.05, 60), default=0.5, show_default=True)
@click.option("--timeout", type=float, help="Give up (exit 3) after this many seconds.")
@pass_runtime
def watch(rt, job_id: int, business_id: int | None, interval: float, timeout: float | None):
    """Draw a live progress bar (processed/total, rate, ETA) until the job ends.

    Exit status: 0 succeeded, 1 failed, 2 cancelled, 3 --timeout reached.
    """
    tty = sys.stdout.isatty()
    start = time.monotonic()
    samples: list[tuple[float, int]] = []
    last_line = None
    while True:
        j = _get(rt, job_id, business_id)
        now = time.monotonic()
        samples = [s for s in samples if now - s[0] <= 10] + [(now, j["processed"] or 0)]
        rate = None
        if len(samples) > 1 and samples[-1][0] > samples[0][0]:
            rate = (samples[-1][1] - samples[0][1]) / (samples[-1][0] - samples[0][0]) or None
        line = _bar(j, rate)
        if tty:
            click.echo("\r" + line.ljust(100), nl=False)
        elif line != last_line:
            click.echo(line)
        last_line = line
        if j["status"] in FINAL_STATUSES:
            break
        if timeout is not None and now - start >= timeout:
            if tty:
                click.echo()
            click.echo(f"error: job {job_id} still {j['status']} after {timeout:g}s", err=True)
            sys.exit(EXIT_TIMEOUT)
        time.sleep(interval)
    if tty:
        click.echo()
    if j["status"] == "failed":
        from prosaas_core.jobs.errortext import first_line

        last = first_line(j["error"] or "") or "unknown error"
        click.echo(f"job {job_id} failed: {last}", err=True)
        sys.exit(EXIT_FAILED)
    if j["status"] == "cancelled":
        click.echo(f"job {job_id} was cancelled", err=True)
        sys.exit(EXIT_CANCELLED)
    click.echo(f"job {job_id} succeeded: {json.dumps(j['result'], sort_keys=True)}")


@jobs.command()
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as an object.")
@pass_runtime
def prune(rt, dry_run: bool, as_json: bool) -> None:
    """Roll up finished jobs, then delete those past their retention (PROSAAS_RETENTION_*).

    Workers do this by themselves on PROSAAS_HISTORY_CRON; this runs it now."""
    from prosaas_core.jobs.prune import prune as do_prune
    from prosaas_core.jobs.prune import rules

    out = do_prune(rt, dry_run=dry_run)
    if as_json:
        echo_json(out)
        return
    for rule in rules(rt.settings):
        kept = "for ever" if rule.days is None else f"{rule.days:g} days"
        click.echo(f"retention {rule.label:<32} {kept}")
    verb = "would delete" if dry_run else "deleted"
    for key, n in out["deleted"].items():
        click.echo(f"{verb} {n:>10}  {key}")
    rolled = out["rolled_up"]
    if rolled is not None:
        click.echo(f"rolled up {rolled['rows']} row(s); history through {rolled['rolled_through']}")
    click.echo(f"{verb} {out['total']} finished job(s) in total")


@jobs.command()
@click.option("--business", "business_id", type=int, help="Only this business's jobs.")
@click.option("--days", type=click.IntRange(1, 3660), default=30, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@pass_runtime
def stats(rt, business_id: int | None, days: int, as_json: bool) -> None:
    """Finished jobs per type and status over the last DAYS days, from the rollups (history
    outlives pruning) and the rows not rolled up yet."""
    from prosaas_core.jobs.history import stats as read_stats

    rows = read_stats(rt, business_id=business_id, days=days)
    if as_json:
        echo_json(rows)
        return
    click.echo(f"{'TYPE':<24} {'STATUS':<10} {'JOBS':>10} {'AVG S':>9} {'MAX S':>9}")
    for r in rows:
        avg = "-" if r["avg_seconds"] is None else f"{r['avg_seconds']:.3f}"
        top = "-" if r["max_seconds"] is None else f"{r['max_seconds']:.3f}"
        click.echo(f"{r['job_type']:<24} {r['status']:<10} {r['jobs']:>10} {avg:>9} {top:>9}")
