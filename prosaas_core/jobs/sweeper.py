"""The sweeper: the database is the source of truth, Redis only the transport.

One pass (one worker at a time, under a PostgreSQL advisory transaction lock):

- rescues ``running`` rows whose worker is gone: its lease lapsed (see lease.py; seconds after
  a SIGKILL) or, for a worker without a lease (a plain ``rq worker``), its job heartbeat is
  stale. Back to ``queued`` for another attempt that resumes from the last checkpoint,
  ``failed`` when attempts are used up, ``cancelled`` when a cancel was pending. The fencing
  token moves on, so the dead worker's writes are refused should it come back;
- re-pushes ``queued`` rows whose RQ job Redis does not hold (a flush, or a crash between the
  commit and the push). It walks every due queued row, BATCH at a time in id order (a keyset,
  not one page), so a lost row is found in the same sweep however many rows Redis still holds.
  A row whose ``run_after`` is in the future (a retry's backoff, a parked row) is not due and
  not looked at. A row whose RQ job still says ``queued`` ORPHAN_AFTER seconds after the row
  last changed is looked for in its queue's list as well: an idle worker waiting on several
  queues pops with RQ's BLPOP and marks what it got a round trip later, so one killed in
  between leaves a ``queued`` job hash in no list, which nothing would ever deliver.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from rq import Queue
from sqlalchemy import Connection, or_, select, text, update

from prosaas_core.jobs.lease import LEASES, forget_lapsed, lapsed_workers
from prosaas_core.jobs.store import T, c, utcnow
from prosaas_core.jobs.transport import push_many, rq_job_id

if TYPE_CHECKING:
    from sqlalchemy import ColumnElement

    from prosaas_core.runtime import Runtime

log = logging.getLogger("prosaas.sweeper")
L = LEASES.c

#: pg_advisory_xact_lock key of the sweeper ("prosaas" + "sweep" in ASCII, fits a bigint)
LOCK_KEY = 0x70726F73617377
#: RQ statuses under which Redis still holds a job that will be delivered
HELD = {b"queued", b"scheduled", b"deferred"}
#: rows examined per keyset page (one SELECT and one Redis pipeline each)
BATCH = 2000
#: seconds after its row last changed before a ``queued`` RQ job is looked for in its list
ORPHAN_AFTER = 60.0
#: a queue list longer than this is not read for orphans (it is draining: looked at later)
ORPHAN_SCAN = 10_000


@dataclass
class SweepReport:
    rescued: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)
    repushed: list[int] = field(default_factory=list)
    #: due queued rows Redis did not hold (re-pushed unless Redis failed meanwhile)
    lost: list[int] = field(default_factory=list)
    skipped: bool = False  # another worker held the sweeper lock


def _try_lock(conn: Connection) -> bool:
    if conn.dialect.name != "postgresql":
        return True  # SQLite: one machine, and every statement below is atomic anyway
    return bool(
        conn.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": LOCK_KEY}).scalar()
    )


def _gone(conn: Connection, rt: Runtime, *, leases: bool):
    """Running rows whose worker is gone: its lease lapsed, or it holds no lease (a plain `rq
    worker`, leases off) and the job heartbeat is stale. A worker whose lease holds is alive,
    however long its handler keeps the job row locked in a transaction."""
    now = utcnow()
    leaseless = or_(c.worker.is_(None), c.worker.not_in(select(L.worker)))
    stale: ColumnElement[bool] = (
        c.heartbeat_at < now - timedelta(seconds=rt.settings.stale_after)
    ) & leaseless
    if leases:
        stale = or_(stale, c.worker.in_(lapsed_workers(conn)))
    return (c.status == "running") & stale


def _rescue(
    conn: Connection, rt: Runtime, report: SweepReport, *, leases: bool
) -> list[tuple[int, str, str]]:
    now = utcnow()
    gone = _gone(conn, rt, leases=leases)
    moved = {"worker": None, "fence": c.fence + 1, "updated_at": now}
    report.cancelled = list(
        conn.execute(
            update(T)
            .where(gone, c.cancel_requested.is_(True))
            .values(status="cancelled", finished_at=now, **moved)
            .returning(c.id)
        ).scalars()
    )
    report.failed = list(
        conn.execute(
            update(T)
            .where(gone, c.attempts >= c.max_attempts)
            .values(
                status="failed",
                finished_at=now,
                error="worker lost: lease lapsed or heartbeat stale, and no attempts left",
                **moved,
            )
            .returning(c.id)
        ).scalars()
    )
    rows = conn.execute(
        update(T)
        .where(gone)
        .values(status="queued", run_after=None, **moved)
        .returning(c.id, c.queue, c.job_type)
    ).all()
    report.rescued = [r[0] for r in rows]
    if leases:
        forget_lapsed(conn)
    return [tuple(r) for r in rows]


def find_lost(
    conn: Connection, rt: Runtime, grace: float, *, limit: int | None = None
) -> list[tuple[int, str, str]]:
    """Every due ``queued`` row older than `grace` seconds whose RQ job Redis does not hold, as
    ``(id, queue, job_type)``, in id order. Walks all queued rows by keyset, BATCH at a time;
    stops early once `limit` lost rows were found."""
    now = utcnow()
    due = (
        (c.status == "queued")
        & or_(c.run_after.is_(None), c.run_after <= now)
        & (c.updated_at <= now - timedelta(seconds=grace))
        & c.parked.is_(None)  # kept out of Redis on purpose: the flow waker admits them
    )
    old = now - timedelta(seconds=ORPHAN_AFTER)
    lost: list[tuple[int, str, str]] = []
    suspects: list[tuple[int, str, str]] = []
    after = 0
    while True:
        rows = conn.execute(
            select(c.id, c.queue, c.job_type, c.updated_at)
            .where(due, c.id > after)
            .order_by(c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            break
        after = rows[-1][0]
        with rt.redis.pipeline(transaction=False) as p:
            for job_id, _, _, _ in rows:
                p.hget(f"rq:job:{rq_job_id(job_id)}", "status")
            statuses = p.execute()
        for (job_id, queue, job_type, changed), st in zip(rows, statuses, strict=True):
            if st not in HELD:
                lost.append((job_id, queue, job_type))
            elif st == b"queued" and _aware(changed) <= old:
                suspects.append((job_id, queue, job_type))
        if len(rows) < BATCH or (limit is not None and len(lost) >= limit):
            break
    return sorted(lost + _in_no_list(rt, suspects))


def _aware(when: datetime) -> datetime:
    """SQLite hands timestamps back naive (they are stored in UTC)."""
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _in_no_list(rt: Runtime, suspects: list[tuple[int, str, str]]) -> list[tuple[int, str, str]]:
    """The suspects whose RQ job says ``queued`` but is in no queue list (see the module
    docstring): each queue's list read once, unless it is longer than ORPHAN_SCAN."""
    per_queue: dict[str, list[tuple[int, str, str]]] = {}
    for row in suspects:
        per_queue.setdefault(row[1], []).append(row)
    orphans: list[tuple[int, str, str]] = []
    for queue, rows in per_queue.items():
        key = Queue(queue, connection=rt.redis).key
        if rt.redis.llen(key) > ORPHAN_SCAN:
            continue
        listed = set(rt.redis.lrange(key, 0, -1))
        missing = [r for r in rows if rq_job_id(r[0]).encode() not in listed]
        if not missing:
            continue
        # read again: a worker may have popped and marked one since (it runs: not an orphan)
        with rt.redis.pipeline(transaction=False) as p:
            for job_id, _, _ in missing:
                p.hget(f"rq:job:{rq_job_id(job_id)}", "status")
            statuses = p.execute()
        orphans.extend(r for r, st in zip(missing, statuses, strict=True) if st == b"queued")
    return orphans


def interleave(rows: list[tuple[int, str, str]]) -> list[tuple[int, str, str]]:
    """The rows taking turns by queue, oldest first within each: after a flush, the few lost
    jobs of a small queue are pushed in the first round trip, not after a big queue's backlog."""
    per_queue: dict[str, list[tuple[int, str, str]]] = {}
    for row in rows:
        per_queue.setdefault(row[1], []).append(row)
    lanes = list(per_queue.values())
    out: list[tuple[int, str, str]] = []
    for i in range(max((len(lane) for lane in lanes), default=0)):
        out.extend(lane[i] for lane in lanes if i < len(lane))
    return out


def sweep(
    rt: Runtime,
    *,
    grace: float = 1.0,
    rescue: bool = True,
    lost: bool = True,
    leases: bool = True,
) -> SweepReport:
    """One pass. `grace`: a queued row younger than this is not re-pushed (its enqueue may be
    between commit and push); a duplicate push would only be a skipped delivery anyway.
    `rescue`/`lost` select the two halves; `leases=False` rescues by stale heartbeat only (the
    caller just got the database back and gives live workers one TTL to renew first)."""
    report = SweepReport()
    rescued: list[tuple[int, str, str]] = []
    if rescue:
        with rt.engine.begin() as conn:
            if not _try_lock(conn):
                report.skipped = True
                return report
            rescued = _rescue(conn, rt, report, leases=leases)
    for job_id in report.cancelled:
        log.warning("SWEEPER cancelled job_id=%s: worker lost while a cancel was pending", job_id)
    for job_id in report.failed:
        log.error("SWEEPER failed job_id=%s: worker lost and no attempts left", job_id)
    for job_id, _queue, job_type in rescued:
        log.warning(
            "SWEEPER rescued job_id=%s job_type=%s: worker lost, requeued", job_id, job_type
        )
    if rescued:
        push_many(rt, rescued)
    if not lost:
        return report
    with rt.engine.begin() as conn:
        if not _try_lock(conn):
            report.skipped = True
            return report
        found = find_lost(conn, rt, grace)
        report.lost = [r[0] for r in found]
        report.repushed = sorted(push_many(rt, interleave(found)))
    if report.repushed:
        log.warning(
            "SWEEPER re-pushed %d queued job(s) Redis did not hold: %s",
            len(report.repushed),
            ", ".join(map(str, report.repushed[:20]))
            + (" ..." if len(report.repushed) > 20 else ""),
        )
    return report
