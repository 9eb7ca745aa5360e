"""The dashboard's own reads of ``background_jobs``: small, indexed, scoped to a business.

Every function takes `scope` (a business id, or None for an operator) and applies it in SQL,
so a business viewer can never read another business's rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, literal_column, or_, select

from prosaas_core.jobs.store import c, utcnow
from prosaas_core.models import FINAL_STATUSES, JOB_STATUSES
from prosaas_core.runtime import Runtime

PAGE_SIZE = 50
#: most job ids one poll may ask about
MAX_POLL_IDS = 100
SINCE = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7)}
#: the columns a list row or a poll needs (not payload/result/state: they can be large)
ROW_COLUMNS = (
    c.id,
    c.job_type,
    c.business_id,
    c.queue,
    c.status,
    c.attempts,
    c.max_attempts,
    c.processed,
    c.total,
    c.error,
    c.parked,
    c.cancel_requested,
    c.created_at,
    c.started_at,
    c.finished_at,
)


@dataclass(frozen=True)
class JobFilter:
    """The Jobs page's filters, already validated."""

    status: str | None = None
    job_type: str | None = None
    business_id: int | None = None
    queue: str | None = None
    since: str | None = None
    before: int | None = None

    def query_args(self, **change: Any) -> dict[str, Any]:
        """The filter as URL query arguments (for links and the next page)."""
        args = {
            "status": self.status,
            "type": self.job_type,
            "business": self.business_id,
            "queue": self.queue,
            "since": self.since,
            "before": self.before,
        }
        args.update(change)
        return {k: v for k, v in args.items() if v not in (None, "")}


class FilterError(ValueError):
    """A filter value the page cannot use (answered 400)."""


def parse_filter(args: Any, *, admin: bool) -> JobFilter:
    """Validate the query string: unknown values are a 400, not an empty page."""

    def text(name: str, cap: int = 63) -> str | None:
        value = (args.get(name) or "").strip()
        if len(value) > cap:
            raise FilterError(f"{name} is longer than {cap} characters")
        return value or None

    def number(name: str) -> int | None:
        value = text(name, 20)
        if value is None:
            return None
        if not value.isdigit() or int(value) > 2**63 - 1:
            raise FilterError(f"{name} must be a positive whole number")
        return int(value)

    status = text("status")
    if status is not None and status not in JOB_STATUSES:
        raise FilterError(f"status must be one of {', '.join(JOB_STATUSES)}")
    since = text("since")
    if since is not None and since not in SINCE:
        raise FilterError(f"since must be one of {', '.join(SINCE)}")
    return JobFilter(
        status=status,
        job_type=text("type"),
        business_id=number("business") if admin else None,
        queue=text("queue"),
        since=since,
        before=number("before"),
    )


def _scoped(q: Select, scope: int | None) -> Select:
    return q if scope is None else q.where(c.business_id == scope)


def list_jobs(rt: Runtime, f: JobFilter, scope: int | None) -> tuple[list[dict], int | None]:
    """One page of jobs, newest first, and the cursor of the next page (None at the end).

    Keyset pagination on the primary key: ``id < before ORDER BY id DESC LIMIT n``, as cheap on
    page 1,000 as on page 1."""
    q = select(*ROW_COLUMNS).order_by(c.id.desc()).limit(PAGE_SIZE + 1)
    q = _scoped(q, scope)
    if f.business_id is not None:
        q = q.where(c.business_id == f.business_id)
    if f.status is not None:
        q = q.where(c.status == f.status)
    if f.job_type is not None:
        q = q.where(c.job_type == f.job_type)
    if f.queue is not None:
        q = q.where(c.queue == f.queue)
    if f.since is not None:
        q = q.where(c.created_at >= utcnow() - SINCE[f.since])
    if f.before is not None:
        q = q.where(c.id < f.before)
    with rt.engine.connect() as conn:
        rows = [row_dict(r) for r in conn.execute(q)]
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    return rows, (rows[-1]["id"] if more else None)


def poll_jobs(rt: Runtime, ids: list[int], scope: int | None) -> list[dict]:
    """The live fields of these jobs (primary-key lookups); ids of other businesses are
    simply not answered."""
    if not ids:
        return []
    q = _scoped(select(*ROW_COLUMNS).where(c.id.in_(ids[:MAX_POLL_IDS])), scope)
    with rt.engine.connect() as conn:
        return [row_dict(r) for r in conn.execute(q)]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def error_summary(error: str | None, cap: int = 140) -> str | None:
    """The first line of an error, shortened: what fits in a table cell."""
    if not error:
        return None
    line = error.strip().splitlines()[0] if error.strip() else ""
    return line if len(line) <= cap else line[: cap - 1] + "…"


def row_dict(r: Any, now: datetime | None = None) -> dict[str, Any]:
    """A job row as the list, the poll and the job page show it, with percent, rate and ETA.

    Rate is the average since the job started (items per second); ETA the remaining items at
    that rate. Both are None until there is something to measure."""
    now = now or utcnow()
    percent = rate = eta = None
    if r.total:
        percent = max(0.0, min(100.0, 100.0 * r.processed / r.total))
    if r.status == "running" and r.started_at is not None and r.processed:
        elapsed = (now - r.started_at).total_seconds()
        if elapsed > 0:
            rate = r.processed / elapsed
            if r.total and r.total > r.processed:
                eta = (r.total - r.processed) / rate
    return {
        "id": r.id,
        "job_type": r.job_type,
        "business_id": r.business_id,
        "queue": r.queue,
        "status": r.status,
        "attempts": r.attempts,
        "max_attempts": r.max_attempts,
        "processed": r.processed,
        "total": r.total,
        "percent": percent,
        "rate": rate,
        "eta_seconds": eta,
        "error": error_summary(r.error),
        "parked": r.parked,
        "cancel_requested": bool(r.cancel_requested),
        "created_at": _iso(r.created_at),
        "started_at": _iso(r.started_at),
        "finished_at": _iso(r.finished_at),
    }


def queue_counts(
    rt: Runtime, scope: int | None, finished: Finished | None = None
) -> dict[str, dict[str, int]]:
    """Per queue: queued (due, not parked), parked, waiting for a retry, running (one grouped
    read of the active rows), and failed in the last hour (from `finished`)."""
    now = utcnow()
    due = or_(c.run_after.is_(None), c.run_after <= now)
    kind = (
        select(
            c.queue,
            c.status,
            c.parked.is_not(None).label("parked"),
            due.label("due"),
            func.count().label("n"),
        )
        .where(c.status.in_(("queued", "running")))
        .group_by(c.queue, c.status, literal_column("3"), literal_column("4"))
    )
    out: dict[str, dict[str, int]] = {}

    def item(queue: str) -> dict[str, int]:
        return out.setdefault(
            queue, {"queued": 0, "parked": 0, "later": 0, "running": 0, "failed_1h": 0}
        )

    with rt.engine.connect() as conn:
        for queue, status, parked, is_due, n in conn.execute(_scoped(kind, scope)):
            if status == "running":
                item(queue)["running"] += n
            elif parked:
                item(queue)["parked"] += n
            elif is_due:
                item(queue)["queued"] += n
            else:
                item(queue)["later"] += n
    for (_, _, status, queue), n in (finished or Finished()).totals().items():
        if status == "failed":
            item(queue)["failed_1h"] += n
    for q in rt.registry.queues:
        item(q)
    return dict(sorted(out.items()))


#: one minute's finished jobs: {(job_type, status, queue): n}
Minute = dict[tuple[str, str, str], int]
#: minutes older than this are taken as settled (no job will still commit a finish in them)
SETTLE = timedelta(minutes=2)
WINDOW = 60


@dataclass
class Finished:
    """Jobs finished per minute over the last `WINDOW` minutes, by (type, status, queue)."""

    start: datetime | None = None
    minutes: list[Minute] | None = None

    def totals(self) -> dict[tuple[int, str, str, str], int]:
        out: dict[tuple[int, str, str, str], int] = {}
        for i, minute in enumerate(self.minutes or []):
            for (job_type, status, queue), n in minute.items():
                out[(i, job_type, status, queue)] = n
        return out


class FinishedCache:
    """Settled minutes of `finished_jobs`, kept per scope in this process: an Overview poll
    then reads only the last couple of minutes, not an hour of finished rows (measured in
    bench/dashboard.py: the whole hour over 100,000 jobs is hundreds of milliseconds)."""

    MAX_SCOPES = 512

    def __init__(self) -> None:
        import threading

        self._lock = threading.Lock()
        self._minutes: dict[int | None, dict[datetime, Minute]] = {}

    def get(self, scope: int | None) -> dict[datetime, Minute]:
        with self._lock:
            if scope not in self._minutes and len(self._minutes) >= self.MAX_SCOPES:
                self._minutes.clear()
            return dict(self._minutes.setdefault(scope, {}))

    def put(self, scope: int | None, minutes: dict[datetime, Minute], oldest: datetime) -> None:
        with self._lock:
            self._minutes[scope] = {m: v for m, v in minutes.items() if m >= oldest}


def finished_jobs(rt: Runtime, scope: int | None, cache: FinishedCache | None = None) -> Finished:
    """Finished jobs per minute for the last `WINDOW` minutes (the current one included): an
    index range on ``finished_at`` from the first minute not yet cached."""
    now = utcnow().replace(second=0, microsecond=0)
    start = now - timedelta(minutes=WINDOW - 1)
    settled_before = now - SETTLE
    known = cache.get(scope) if cache is not None else {}
    query_from = start
    while query_from in known and query_from < settled_before:
        query_from += timedelta(minutes=1)
    if rt.engine.dialect.name == "postgresql":
        bucket = func.date_trunc("minute", c.finished_at)
    else:
        bucket = func.strftime("%Y-%m-%d %H:%M", c.finished_at)
    q = (
        select(bucket.label("minute"), c.job_type, c.status, c.queue, func.count())
        .where(c.finished_at >= query_from, c.status.in_(FINAL_STATUSES))
        .group_by(literal_column("1"), c.job_type, c.status, c.queue)
    )
    fresh: dict[datetime, Minute] = {}
    with rt.engine.connect() as conn:
        for minute, job_type, status, queue, n in conn.execute(_scoped(q, scope)):
            if isinstance(minute, str):
                minute = datetime.fromisoformat(minute).replace(tzinfo=start.tzinfo)
            bucket_of = fresh.setdefault(minute, {})
            bucket_of[(job_type, status, queue)] = bucket_of.get((job_type, status, queue), 0) + n
    merged = {m: v for m, v in known.items() if m < query_from}
    merged.update(fresh)
    if cache is not None:
        settled = {m: v for m, v in merged.items() if m < settled_before}
        m = query_from
        while m < settled_before:  # an empty settled minute is known too
            settled.setdefault(m, {})
            m += timedelta(minutes=1)
        cache.put(scope, settled, start)
    minutes = [merged.get(start + timedelta(minutes=i), {}) for i in range(WINDOW)]
    return Finished(start=start, minutes=minutes)


def throughput(finished: Finished) -> dict[str, Any]:
    """Jobs finished per minute by job type: ``{"start": iso, "minutes": n, "series": {type:
    [n per minute]}}``."""
    series: dict[str, list[int]] = {}
    for (i, job_type, _, _), n in finished.totals().items():
        series.setdefault(job_type, [0] * WINDOW)[i] += n
    start = finished.start.isoformat() if finished.start else None
    return {"start": start, "minutes": WINDOW, "series": dict(sorted(series.items()))}
