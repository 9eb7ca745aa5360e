"""The sweeper: the database is the source of truth, Redis only the transport.

One pass (one worker at a time, under a PostgreSQL advisory transaction lock):

- rescues ``running`` rows whose heartbeat is stale (their worker died): back to ``queued`` for
  another attempt that resumes from the last checkpoint, ``failed`` when attempts are used up,
  ``cancelled`` when a cancel was pending. The fencing token moves on, so the dead worker's
  writes are refused should it come back;
- re-pushes ``queued`` rows whose RQ job Redis does not hold (a flush, or a crash between the
  commit and the push).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import Connection, or_, select, text, update

from prosaas_core.jobs.store import T, c, utcnow
from prosaas_core.jobs.transport import push, rq_job_id

if TYPE_CHECKING:
    from prosaas_core.runtime import Runtime

log = logging.getLogger("prosaas.sweeper")

#: pg_advisory_xact_lock key of the sweeper ("prosaas" + "sweep" in ASCII, fits a bigint)
LOCK_KEY = 0x70726F73617377
#: RQ statuses under which Redis still holds a job that will be delivered
HELD = {b"queued", b"scheduled", b"deferred"}
#: rows examined per pass
BATCH = 2000


@dataclass
class SweepReport:
    rescued: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)
    repushed: list[int] = field(default_factory=list)
    skipped: bool = False  # another worker held the sweeper lock


def _try_lock(conn: Connection) -> bool:
    if conn.dialect.name != "postgresql":
        return True  # SQLite: one machine, and every statement below is atomic anyway
    return bool(
        conn.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": LOCK_KEY}).scalar()
    )


def _rescue(conn: Connection, rt: Runtime, report: SweepReport) -> list[tuple[int, str, str]]:
    now = utcnow()
    stale = (c.status == "running") & (
        c.heartbeat_at < now - timedelta(seconds=rt.settings.stale_after)
    )
    moved = {"worker": None, "fence": c.fence + 1, "updated_at": now}
    report.cancelled = list(
        conn.execute(
            update(T)
            .where(stale, c.cancel_requested.is_(True))
            .values(status="cancelled", finished_at=now, **moved)
            .returning(c.id)
        ).scalars()
    )
    report.failed = list(
        conn.execute(
            update(T)
            .where(stale, c.attempts >= c.max_attempts)
            .values(
                status="failed",
                finished_at=now,
                error="worker lost: heartbeat stale and no attempts left",
                **moved,
            )
            .returning(c.id)
        ).scalars()
    )
    rows = conn.execute(
        update(T)
        .where(stale)
        .values(status="queued", run_after=None, **moved)
        .returning(c.id, c.queue, c.job_type)
    ).all()
    report.rescued = [r[0] for r in rows]
    return [tuple(r) for r in rows]


def _lost(conn: Connection, rt: Runtime, grace: float) -> list[tuple[int, str, str]]:
    now = utcnow()
    rows = conn.execute(
        select(c.id, c.queue, c.job_type)
        .where(
            c.status == "queued",
            or_(c.run_after.is_(None), c.run_after <= now),
            c.updated_at <= now - timedelta(seconds=grace),
            c.parked.is_(None),  # kept out of Redis on purpose: the flow waker admits them
        )
        .order_by(c.id)
        .limit(BATCH)
    ).all()
    if not rows:
        return []
    with rt.redis.pipeline(transaction=False) as p:
        for job_id, _, _ in rows:
            p.hget(f"rq:job:{rq_job_id(job_id)}", "status")
        statuses = p.execute()
    return [tuple(r) for r, st in zip(rows, statuses, strict=True) if st not in HELD]


def sweep(rt: Runtime, *, grace: float = 1.0) -> SweepReport:
    """One pass. `grace`: a queued row younger than this is not re-pushed (its enqueue may be
    between commit and push); a duplicate push would only be a skipped delivery anyway."""
    report = SweepReport()
    with rt.engine.begin() as conn:
        if not _try_lock(conn):
            report.skipped = True
            return report
        rescued = _rescue(conn, rt, report)
    for job_id in report.cancelled:
        log.warning("SWEEPER cancelled job_id=%s: worker lost while a cancel was pending", job_id)
    for job_id in report.failed:
        log.error("SWEEPER failed job_id=%s: worker lost and no attempts left", job_id)
    for job_id, queue, job_type in rescued:
        log.warning(
            "SWEEPER rescued job_id=%s job_type=%s: worker lost, requeued", job_id, job_type
        )
        _push(rt, job_id, queue, job_type)
    with rt.engine.begin() as conn:
        if not _try_lock(conn):
            return report
        lost = _lost(conn, rt, grace)
        for job_id, queue, job_type in lost:
            if _push(rt, job_id, queue, job_type):
                report.repushed.append(job_id)
    if report.repushed:
        log.warning(
            "SWEEPER re-pushed %d queued job(s) Redis did not hold: %s",
            len(report.repushed),
            ", ".join(map(str, report.repushed[:20]))
            + (" ..." if len(report.repushed) > 20 else ""),
        )
    return report


def _push(rt: Runtime, job_id: int, queue: str, job_type: str) -> bool:
    jt = rt.registry.job_types.get(job_type)
    return push(rt, job_id, queue, timeout=jt.timeout if jt else None)
