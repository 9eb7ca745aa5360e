"""``prosaas doctor``: check a deployment, one line per finding, exit 1 on any problem.

Above all it looks for work waiting in a queue (or for a service) that no live worker consumes:
the one symptom that nothing else reports (docs/architecture.md, "Why it is built this way").
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
        _database_topology(rt, report)
    except Exception as exc:
        report.add(WARN, f"database topology unknown: {first_line(exc)}")
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


def _database_topology(rt: Runtime, report: Report) -> None:
    """Direct or pooled PostgreSQL, and where migrations go (``migrate/pooler.py``'s probe)."""
    from sqlalchemy.pool import NullPool

    from prosaas_core.db import is_sqlite, make_engine
    from prosaas_core.migrate.pooler import transaction_pooled

    if rt.engine.dialect.name != "postgresql":
        return
    pooled = transaction_pooled(rt.engine)
    mig = rt.settings.migration_database_url
    if not pooled:
        report.add(OK, "database topology: direct PostgreSQL (one backend per connection)")
        return
    report.add(OK, "database topology: pooled (a transaction pooler such as PgBouncer)")
    if not mig:
        report.add(
            WARN,
            "DATABASE_MIGRATION_URL is not set: `prosaas db upgrade` and RUN_MIGRATIONS refuse "
            "to migrate through the pooler",
        )
    elif not is_sqlite(mig):
        engine = make_engine(mig, poolclass=NullPool, ping_idle_seconds=None)
        try:
            mig_pooled = transaction_pooled(engine)
        finally:
            engine.dispose()
        if mig_pooled:
            report.add(PROBLEM, "DATABASE_MIGRATION_URL goes through a transaction pooler too")
        else:
            report.add(OK, f"migrations go direct ({mask_url(mig)})")


def check_redis(rt: Runtime, report: Report) -> bool:
    from prosaas_core.redisconn import describe, topology

    try:
        rt.request_redis.ping()
    except Exception as exc:
        where = describe(rt.settings)
        report.add(PROBLEM, f"Redis unreachable ({where}): {mask_urls_in(str(exc))}")
        return False
    report.add(OK, "Redis reachable")
    try:
        topo = topology(rt.settings, rt.request_redis)
    except Exception as exc:
        report.add(WARN, f"Redis topology unknown: {first_line(exc)}")
        return True
    replicas = ", ".join(topo.replicas) or "none"
    if topo.role != "master":
        report.add(PROBLEM, f"Redis at {topo.master} is a {topo.role}, not a master: writes fail")
    if topo.mode == "sentinel":
        n = len(rt.settings.redis_sentinels)
        report.add(
            OK if topo.sentinels else WARN,
            f"Redis topology: sentinel master {rt.settings.redis_sentinel_master!r} at "
            f"{topo.master}, {len(topo.sentinels)}/{n} sentinel(s) answering, "
            f"replicas: {replicas}",
        )
    else:
        report.add(OK, f"Redis topology: direct master {topo.master}, replicas: {replicas}")
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
        in_redis = Queue(q, connection=rt.request_redis).count
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
    if db_ok:
        _check_stranded(rt, report)
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


#: stranded rows listed by id in the doctor's line, at most
STRANDED_SHOWN = 10


def stranded_after(rt: Runtime) -> float:
    """A due queued row Redis has not held for this long is stranded: a sweep (every
    PROSAAS_SWEEP_INTERVAL, by any live worker) would have re-pushed it by now."""
    return 2 * rt.settings.sweep_interval + 5


def _check_stranded(rt: Runtime, report: Report) -> None:
    """Queued rows that are due but not in Redis: no worker will ever receive them until a
    sweep re-pushes them. Found by the sweeper's own keyset over every queued row."""
    from prosaas_core.jobs.sweeper import find_lost

    after = stranded_after(rt)
    try:
        with rt.engine.connect() as conn:
            lost = find_lost(conn, rt, after)
    except Exception as exc:
        report.add(PROBLEM, f"stranded-job check failed: {first_line(exc)}")
        return
    per_queue: dict[str, list[int]] = {}
    for job_id, queue, _ in lost:
        per_queue.setdefault(queue, []).append(job_id)
    for queue, ids in sorted(per_queue.items()):
        shown = ", ".join(map(str, ids[:STRANDED_SHOWN])) + (" ..." if len(ids) > 10 else "")
        report.add(
            PROBLEM,
            f"queue {queue!r}: {len(ids)} queued job(s) due for over {after:.0f}s but not in "
            f"Redis, so no worker will receive them ({shown}): a live worker's sweeper re-pushes "
            f"them; check that one is running and its log for SWEEPER lines",
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


def check_flow(rt: Runtime, report: Report) -> None:
    """Per business and job type under a flow limit: slots held, rate used, parked jobs and
    why; a problem when parked jobs have waited past two leases without a waker looking."""
    from datetime import timedelta

    from sqlalchemy import func, select

    from prosaas_core.jobs.flow import summary
    from prosaas_core.jobs.store import c, utcnow

    try:
        rows = summary(rt)
        with rt.engine.connect() as conn:
            overdue = conn.execute(
                select(func.count()).where(
                    c.parked.is_not(None),
                    c.status == "queued",
                    c.run_after < utcnow() - timedelta(seconds=2 * rt.settings.flow_lease),
                )
            ).scalar_one()
    except Exception as exc:
        report.add(WARN, f"flow limits: could not be read: {first_line(exc)}")
        return
    for r in rows:
        slots = f"slots {r['slots_held']}/{r['concurrency']}" if r["concurrency"] else "no slots"
        rate = f"rate {r['rate_used']}/{r['rate']}" if r["rate"] else "no rate"
        why = "; ".join(f"{n} {reason}" for reason, n in sorted(r["parked_reasons"].items()))
        report.add(
            OK,
            f"flow {r['job_type']} business {r['business_id']}: {slots}, {rate}, "
            f"{r['running']} running, {r['parked']} parked" + (f" ({why})" if why else ""),
        )
    if overdue:
        report.add(
            PROBLEM,
            f"{overdue} parked job(s) not looked at for over two flow leases: is a "
            "`prosaas worker` running? (its flow waker admits them)",
        )


def check_schedules(rt: Runtime, report: Report) -> None:
    """Each schedule's last and next occurrence; a problem when one is overdue or its job type
    is not installed: scheduled work must never be silently off."""
    from prosaas_core.schedules import status

    try:
        rows = status(rt)
    except Exception as exc:
        report.add(WARN, f"schedules: could not be read: {first_line(exc)}")
        return
    for r in rows:
        where = "per business" if r["per_business"] else f"business {r['business_id']}"
        if r["problem"]:
            report.add(PROBLEM, f"schedule {r['name']!r} ({where}): {r['problem']}")
        elif r["paused"]:
            report.add(WARN, f"schedule {r['name']!r} ({where}): paused")
        else:
            report.add(
                OK,
                f"schedule {r['name']!r} ({where}): last {r['last_occurrence'] or 'never'}, "
                f"next {r['next_occurrence']}",
            )
    if "ENABLE_SCHEDULERS" in rt.settings.env:
        report.add(
            WARN,
            "ENABLE_SCHEDULERS is set but does nothing: every prosaas worker fires schedules",
        )


def diagnose(rt: Runtime) -> Report:
    """Every check, in order; a check that needs an unreachable server is skipped."""
    report = Report()
    for plugin, reason in sorted(getattr(rt.pm, "failures", {}).items()):
        report.add(PROBLEM, f"plugin {plugin!r} failed to load: {reason}")
    for plugin, inc in sorted(getattr(rt.pm, "incompatible", {}).items()):
        report.add(PROBLEM, f"plugin {plugin!r} is incompatible and not loaded: {inc.reason}")
    db_ok = check_database(rt, report)
    if check_redis(rt, report):
        check_workers(rt, report, db_ok=db_ok)
        if db_ok:
            check_flow(rt, report)
    if db_ok:
        check_schedules(rt, report)
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
