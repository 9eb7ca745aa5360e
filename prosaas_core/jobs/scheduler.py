"""The scheduler every ``prosaas worker`` runs: fires due schedule occurrences, exactly once.

Every worker ticks (``PROSAAS_SCHEDULE_TICK``, 1 s); one tick fires at a time, under the
PostgreSQL advisory transaction lock ``LOCK_KEY`` (a killed leader's lock goes with its
connection, so the next tick of any other worker takes over). What makes an occurrence fire
once is not the lock but the table: each fired occurrence is a row of ``prosaas_schedule_runs``
with the unique key (schedule, occurrence time, business), inserted in the same transaction as
its jobs. Two leaders at once, or a tick retried after a crash, insert nothing the second time.

Occurrences older than ``PROSAAS_SCHEDULE_GRACE`` (60 s) when a tick gets to them were missed
(no worker ran): the schedule's ``catch_up`` fires none of them ("skip"), the latest ("once") or
each, up to ``PROSAAS_SCHEDULE_CATCH_UP_MAX`` ("all").
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, func, select, text, update

if TYPE_CHECKING:
    from prosaas_core.runtime import Runtime
    from prosaas_core.schedules import Effective

log = logging.getLogger("prosaas.scheduler")

#: pg_try_advisory_xact_lock key of the scheduler ("prosaas" + "sched" in ASCII)
LOCK_KEY = 0x70726F73736368
#: businesses per statement when a per-business schedule fires
BATCH = 500


@dataclass
class Fired:
    """What one tick created: (job id, business id, job type, due time or None)."""

    jobs: list[tuple[int, int, str, datetime | None]] = field(default_factory=list)
    occurrences: int = 0
    skipped: int = 0
    leader: bool = True


def _jitter(e: Effective, occurrence: datetime, business_id: int) -> float:
    """A stable spread in [0, jitter) seconds for one business's job of one occurrence."""
    if not e.jitter:
        return 0.0
    h = hashlib.sha256(f"{e.id}:{occurrence.isoformat()}:{business_id}".encode()).digest()
    return e.jitter * int.from_bytes(h[:4], "big") / 2**32


def _insert_ignore(conn: Connection, table: Any, rows: list[dict], returning: list[Any]) -> list:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]  # same API
    stmt = insert(table).values(rows).on_conflict_do_nothing().returning(*returning)
    return list(conn.execute(stmt).all())


def _fire(
    rt: Runtime, conn: Connection, e: Effective, occurrence: datetime, worker: str, out: Fired
) -> None:
    """Fire one occurrence: its run rows and jobs, for its business or every business."""
    from prosaas_core.jobs.enqueue import validate_payload
    from prosaas_core.models import BackgroundJob, Business, ScheduleRun

    jt = rt.registry.job_types[e.job_type]
    payload = validate_payload(jt, e.payload)
    runs, jobs = ScheduleRun.__table__, BackgroundJob.__table__
    after = 0
    while True:
        if e.per_business:
            ids = list(
                conn.execute(
                    select(Business.id).where(Business.id > after).order_by(Business.id)
                    .limit(BATCH)
                ).scalars()
            )  # fmt: skip
            if not ids:
                return
            after = ids[-1]
        else:
            assert e.business_id is not None  # a business's own schedule names its business
            ids = [e.business_id]
        fresh = [
            r[0]
            for r in _insert_ignore(
                conn,
                runs,
                [
                    {
                        "schedule_id": e.id,
                        "occurrence_at": occurrence,
                        "business_id": b,
                        "fired_by": worker,
                    }
                    for b in ids
                ],  # fmt: skip
                [runs.c.business_id],
            )
        ]
        if fresh:
            out.occurrences += 1
            now = datetime.now(occurrence.tzinfo)
            rows = []
            for b in fresh:
                spread = _jitter(e, occurrence, b)
                due = now + timedelta(seconds=spread) if spread else None
                rows.append(
                    {
                        "business_id": b,
                        "job_type": jt.name,
                        "queue": jt.queue,
                        "status": "queued",
                        "payload": payload,
                        "max_attempts": jt.max_attempts,
                        "unique_key": jt.name if jt.unique_per_business else None,
                        "run_after": due,
                    }  # fmt: skip
                )
            made = _insert_ignore(conn, jobs, rows, [jobs.c.id, jobs.c.business_id])
            due_of = {r["business_id"]: r["run_after"] for r in rows}
            for job_id, b in made:
                conn.execute(
                    update(runs)
                    .where(runs.c.schedule_id == e.id, runs.c.occurrence_at == occurrence,
                           runs.c.business_id == b)
                    .values(job_id=job_id)
                )  # fmt: skip
                out.jobs.append((job_id, b, jt.name, due_of[b]))
        if not e.per_business:
            return


def _plan(rt: Runtime, e: Effective, now: datetime) -> tuple[list[datetime], int, datetime]:
    """The occurrences of `e` to fire now, how many missed ones catch-up skips, and how far
    the schedule has been dealt with."""
    from prosaas_core.schedules import occurrences

    start = e.fired_through or e.created_at
    occ = list(occurrences(e.cron, e.timezone, start, now))
    if not occ:
        return [], 0, start
    grace = timedelta(seconds=rt.settings.schedule_grace)
    missed = [o for o in occ if now - o > grace]
    current = [o for o in occ if now - o <= grace]
    if e.catch_up == "once":
        keep = missed[-1:]
    elif e.catch_up == "all":
        keep = missed[-rt.settings.schedule_catch_up_max :]
    else:
        keep = []
    return keep + current, len(missed) - len(keep), occ[-1]


def tick(rt: Runtime, worker: str) -> Fired:
    """One pass: fire every due occurrence (if this worker is the one ticking now), then push
    the jobs it made. Safe to run anywhere at any time: occurrences fire once."""
    from prosaas_core.jobs.store import utcnow
    from prosaas_core.models import ScheduleRow
    from prosaas_core.schedules import effective, ensure_plugin_rows

    out = Fired()
    with rt.session() as s:
        conn = s.connection()
        if (
            conn.dialect.name == "postgresql"
            and not conn.execute(
                text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": LOCK_KEY}
            ).scalar()
        ):
            out.leader = False
            return out
        ensure_plugin_rows(rt, s)
        now = utcnow()
        for e in effective(rt, list(s.scalars(select(ScheduleRow)))):
            if e.paused or e.job_type not in rt.registry.job_types:
                continue
            fire, skipped, through = _plan(rt, e, now)
            if not fire and not skipped and through == (e.fired_through or e.created_at):
                continue
            try:
                with s.begin_nested():  # one failing schedule (say a drifted constraint) alone
                    for occurrence in fire:
                        _fire(rt, conn, e, occurrence, worker, out)
                    conn.execute(
                        update(ScheduleRow.__table__)
                        .where(ScheduleRow.__table__.c.id == e.id)
                        .values(fired_through=through)
                    )
            except Exception as exc:
                log.error("SCHEDULE %s failed to fire: %s", e.name, exc)
                continue
            if skipped:
                out.skipped += skipped
                log.warning(
                    "SCHEDULE %s skipped %d missed occurrence(s) (catch_up=%s)",
                    e.name, skipped, e.catch_up,
                )  # fmt: skip
            for occurrence in fire:
                log.info("SCHEDULE FIRED %s occurrence=%s", e.name, occurrence.isoformat())
    _push(rt, out)
    return out


def _push(rt: Runtime, out: Fired) -> None:
    """Push the jobs of a committed tick (a lost push is swept up like any enqueue's)."""
    from prosaas_core.jobs.delayed import schedule
    from prosaas_core.jobs.enqueue import admit_and_push

    for job_id, business_id, job_type, due in out.jobs:
        jt = rt.registry.job_types[job_type]
        if due is not None:
            delay = (due - datetime.now(due.tzinfo)).total_seconds()
            schedule(rt, job_id, jt.queue, delay, timeout=jt.timeout)
        else:
            admit_and_push(rt, jt, job_id, business_id)


def last_occurrences(rt: Runtime) -> dict[int, datetime]:
    """Each schedule's latest fired occurrence (for metrics)."""
    from prosaas_core.models import ScheduleRun

    with rt.engine.connect() as conn:
        rows = conn.execute(
            select(ScheduleRun.schedule_id, func.max(ScheduleRun.occurrence_at)).group_by(
                ScheduleRun.schedule_id
            )
        ).all()
    return dict(rows)


class Scheduler:
    """The thread of one worker that ticks the scheduler."""

    #: the thread's name and the word its log lines use
    what = "scheduler"

    def __init__(self, rt: Runtime, worker: str) -> None:
        self.rt, self.worker = rt, worker
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def start(self) -> Scheduler:
        self._thread = threading.Thread(target=self._loop, name=self.what, daemon=True)
        self._thread.start()
        self.log.info("%s STARTED (every %.1fs)", self.what.upper(), self.rt.settings.schedule_tick)
        return self

    log = log

    def once(self) -> None:
        """One pass of the thread."""
        tick(self.rt, self.worker)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.wait(self.rt.settings.schedule_tick):
            try:
                self.once()
            except Exception as exc:  # database away: one line now, one when it is back
                if not self._failing:
                    self.log.warning("%s paused: %s", self.what, str(exc).splitlines()[0])
                    self._failing = True
                continue
            if self._failing:
                self.log.info("%s resumed", self.what)
                self._failing = False
