"""``prosaas doctor``: check a deployment, one line per finding, exit 1 on any problem.

Above all it looks for the symptom that hid the recordings outage: work waiting in a queue (or
for a service) that no live worker consumes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import click

from prosaas_core.cli.common import pass_runtime
from prosaas_core.errors import first_line
from prosaas_core.urls import mask_url, mask_urls_in

if TYPE_CHECKING:
    from prosaas_core.runtime import Runtime

OK, WARN, PROBLEM = "ok", "warn", "PROBLEM"


@dataclass
class Report:
    findings: list[tuple[str, str]] = field(default_factory=list)

    def add(self, level: str, line: str) -> None:
        self.findings.append((level, line))

    @property
    def problems(self) -> int:
        return sum(1 for level, _ in self.findings if level == PROBLEM)


def check_database(rt: Runtime, report: Report) -> bool:
    from sqlalchemy import text

    try:
        with rt.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        url = mask_url(rt.engine.url.render_as_string(hide_password=False))
        report.add(PROBLEM, f"database unreachable ({url}): {mask_urls_in(str(exc))}")
        return False
    report.add(OK, f"database reachable ({rt.engine.dialect.name})")
    try:
        from prosaas_core import migrate

        drift = migrate.drift(rt)
    except Exception as exc:
        report.add(PROBLEM, f"schema check failed: {exc}")
        return True
    for line in drift:
        report.add(PROBLEM, line)
    if not drift:
        report.add(OK, "schema and chk_job_type in sync with the installed plugins")
    return True


def check_redis(rt: Runtime, report: Report) -> bool:
    try:
        rt.redis.ping()
    except Exception as exc:
        url = mask_url(rt.settings.redis_url)
        report.add(PROBLEM, f"Redis unreachable ({url}): {mask_urls_in(str(exc))}")
        return False
    report.add(OK, "Redis reachable")
    return True


def _queued_rows(rt: Runtime) -> dict[str, int]:
    """Queued jobs per queue, from the database (the source of truth), due ones only."""
    from sqlalchemy import func, or_, select

    from prosaas_core.jobs.store import c, utcnow

    with rt.engine.connect() as conn:
        rows = conn.execute(
            select(c.queue, func.count())
            .where(c.status == "queued", or_(c.run_after.is_(None), c.run_after <= utcnow()))
            .group_by(c.queue)
        ).all()
    return {q: n for q, n in rows}


def check_workers(rt: Runtime, report: Report, *, db_ok: bool) -> None:
    from rq import Queue

    from prosaas_core.jobs.heartbeat import live_workers

    workers = live_workers(rt)
    if not workers:
        report.add(WARN, "no live prosaas worker")
    queued = _queued_rows(rt) if db_ok else {}
    for q in sorted(set(rt.registry.queues) | set(queued)):
        consumers = [w["name"] for w in workers if q in w["queues"]]
        in_redis = Queue(q, connection=rt.redis).count
        pending = max(queued.get(q, 0), in_redis)
        if consumers:
            report.add(OK, f"queue {q!r}: {pending} pending, {len(consumers)} live worker(s)")
        elif pending:
            report.add(
                PROBLEM,
                f"queue {q!r}: {pending} pending job(s) and no live worker consuming it: "
                f"start `prosaas worker` (or add {q} to its --queues)",
            )
        else:
            report.add(WARN, f"queue {q!r}: no live worker consuming it (nothing pending)")
    _check_services(rt, report, workers)
    for w in workers:
        states = ", ".join(
            f"{n}={s['state']}" + (f"(restarts={s['restarts']})" if s["restarts"] else "")
            for n, s in sorted(w["services"].items())
        )
        report.add(
            OK,
            f"worker {w['name']} on {w['host']} pid {w['pid']}: queues {','.join(w['queues'])}; "
            f"services: {states or '(none)'}",
        )
        for n, s in sorted(w["services"].items()):
            if s["state"] == "restarting":
                report.add(
                    PROBLEM,
                    f"worker {w['name']}: service {n!r} is crash-looping "
                    f"(restarts={s['restarts']}): {s['last_error']}",
                )


def _check_services(rt: Runtime, report: Report, workers: list[dict]) -> None:
    import logging

    from prosaas_core.services import ServiceContext

    for name, svc in sorted(rt.registry.services.items()):
        running = [
            w["name"] for w in workers if w["services"].get(name, {}).get("state") == "running"
        ]
        if svc.pending is None:
            if not running:
                report.add(WARN, f"service {name!r}: no live worker is running it")
            continue
        ctx = ServiceContext(name, threading.Event(), rt, logging.getLogger("prosaas.doctor"))
        try:
            pending = int(svc.pending(ctx))
        except Exception as exc:
            report.add(PROBLEM, f"service {name!r}: pending() failed: {first_line(exc)}")
            continue
        if running:
            report.add(
                OK, f"service {name!r}: {pending} pending, running on {len(running)} worker(s)"
            )
        elif pending:
            report.add(
                PROBLEM,
                f"service {name!r}: {pending} pending item(s) and no live worker running it: "
                f"start `prosaas worker` (and check PROSAAS_DISABLE_SERVICES)",
            )
        else:
            report.add(WARN, f"service {name!r}: no live worker is running it (nothing pending)")


def diagnose(rt: Runtime) -> Report:
    """Every check, in order; a check that needs an unreachable server is skipped."""
    report = Report()
    for plugin, reason in sorted(getattr(rt.pm, "failures", {}).items()):
        report.add(PROBLEM, f"plugin {plugin!r} failed to load: {reason}")
    db_ok = check_database(rt, report)
    if check_redis(rt, report):
        check_workers(rt, report, db_ok=db_ok)
    return report


@click.command()
@pass_runtime
def doctor(rt) -> None:
    """Check the deployment: database, schema, Redis, live workers per queue, and queues or
    services with pending work that no live worker consumes. Exit 1 on any problem."""
    report = diagnose(rt)
    for level, line in report.findings:
        click.echo(f"{level:<7} {line}")
    if report.problems:
        click.echo(f"{report.problems} problem(s) found", err=True)
        raise SystemExit(1)
    click.echo("no problems found")
