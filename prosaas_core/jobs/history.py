"""History of finished jobs that outlives their rows: rollups, totals, and the reads of both.

Every pass of :func:`roll_up` takes the finished rows of one time window (``finished_at``
from ``prosaas_rollup_state.rolled_through`` up to ``now - SETTLE``) and adds them, in one
transaction with the new watermark, to ``prosaas_job_rollups`` (per UTC day x business x job
type x status: jobs, those that ran, the sum and the largest of their run times) and to
``prosaas_job_totals`` (per job type x status, all time, with a run-time histogram). A window
is rolled up exactly once: the watermark row is locked and moved in the same transaction.

Rows finished after the watermark are still in ``background_jobs`` (pruning only deletes rows
before it, see ``prosaas_core.jobs.prune``), so an exact figure is always *totals + the rows
since the watermark*, and the second part is an index range on ``finished_at`` bounded by
one maintenance interval of jobs, however long the history. ``/metrics``, ``jobs stats`` and
the dashboard read history that way.

Rollups count finishes: a failed job retried by hand that then succeeds counts once as failed
and once as succeeded.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, case, func, select

from prosaas_core.models import FINAL_STATUSES, JobRollup, JobTotal, RollupState

if TYPE_CHECKING:
    from prosaas_core.runtime import Runtime

#: upper bounds (seconds) of the run-time histogram's buckets; +Inf follows
BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
#: rows finished less than this long ago are not rolled up yet: a finish computes its
#: finished_at before it commits (and may retry on a fresh connection for db_retry seconds),
#: and hosts' clocks differ a little. A row committed behind the watermark would be missed.
SETTLE = timedelta(minutes=2)
#: at most this much time per rollup transaction (the first pass over a long history)
WINDOW = timedelta(days=7)

R = JobRollup.__table__
TOT = JobTotal.__table__
ST = RollupState.__table__


def _jobs():
    from prosaas_core.jobs.store import c

    return c


def _param(conn: Connection, value: datetime) -> datetime:
    """SQLite keeps naive UTC datetimes; compare with the same."""
    if conn.dialect.name == "sqlite" and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def duration_expr(dialect: str) -> Any:
    """finished_at - started_at in seconds (started_at is the last attempt's start)."""
    c = _jobs()
    if dialect == "postgresql":
        return func.extract("epoch", c.finished_at - c.started_at)
    return (func.julianday(c.finished_at) - func.julianday(c.started_at)) * 86400.0


def _day_expr(dialect: str) -> Any:
    c = _jobs()
    if dialect == "postgresql":
        return func.date(func.timezone("UTC", c.finished_at))
    return func.date(c.finished_at)


@dataclass
class Figures:
    """Finished jobs of one group: how many, how many ran, their run times."""

    jobs: int = 0
    ran: int = 0
    duration_sum: float = 0.0
    duration_max: float | None = None
    #: per bucket of BUCKETS, then +Inf; not cumulative
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))

    def add(self, other: Figures) -> None:
        self.jobs += other.jobs
        self.ran += other.ran
        self.duration_sum += other.duration_sum
        if other.duration_max is not None:
            self.duration_max = max(self.duration_max or 0.0, other.duration_max)
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]


def _aggregate(conn: Connection, where: Iterable[Any], keys: list[Any]) -> dict[tuple, Figures]:
    """Figures of the finished rows matching `where`, grouped by `keys`."""
    c = _jobs()
    d = duration_expr(conn.dialect.name)
    ran = func.count(c.started_at)
    cols = [func.count(), ran, func.coalesce(func.sum(d), 0.0), func.max(d)]
    cols += [func.sum(case((d <= b, 1), else_=0)) for b in BUCKETS]
    stmt = (
        select(*keys, *cols)
        .where(c.status.in_(FINAL_STATUSES), *where)
        .group_by(*keys)  # fmt: skip
    )
    out = {}
    for row in conn.execute(stmt):
        key, (n, r, total, top, *cum) = tuple(row[: len(keys)]), row[len(keys) :]
        cum = [int(x or 0) for x in cum]
        per = [cum[0]] + [b - a for a, b in zip(cum, cum[1:], strict=False)] + [int(r) - cum[-1]]
        out[key] = Figures(int(n), int(r), float(total or 0.0), _f(top), per)
    return out


def _f(value: Any) -> float | None:
    return None if value is None else float(value)


def _upsert(conn: Connection, table: Any, rows: list[dict], keys: list[str], set_: Any) -> None:
    if not rows:
        return
    insert = _dialect_insert(conn)
    stmt = insert(table).values(rows)
    conn.execute(stmt.on_conflict_do_update(index_elements=keys, set_=set_(stmt.excluded)))


def _greatest(conn: Connection, a: Any, b: Any) -> Any:
    fn = func.greatest if conn.dialect.name == "postgresql" else func.max
    return fn(func.coalesce(a, b), func.coalesce(b, a))


def _window(conn: Connection, upto: datetime) -> tuple[datetime, datetime] | None:
    """Lock the watermark; the next window to roll up, or None when caught up."""
    c = _jobs()
    stmt = select(ST.c.rolled_through).where(ST.c.id == 1)
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    lo = _aware(conn.execute(stmt).scalar())
    if lo is None:  # first pass: from the oldest finished row (an index probe)
        lo = _aware(conn.execute(select(func.min(c.finished_at))).scalar())
        if lo is None:
            lo = upto
            conn.execute(ST.update().where(ST.c.id == 1).values(rolled_through=upto))
    if lo >= upto:
        return None
    return lo, min(lo + WINDOW, upto)


def roll_up(rt: Runtime, *, now: datetime | None = None) -> dict[str, Any]:
    """Roll up every settled window not rolled up yet; {"rows", "windows", "rolled_through"}."""
    from prosaas_core.jobs.store import utcnow

    c = _jobs()
    upto = (now or utcnow()) - SETTLE
    rows = windows = 0
    while True:
        with rt.engine.begin() as conn:
            win = _window(conn, upto)
            if win is None:
                break
            lo, hi = win
            where = [c.finished_at >= _param(conn, lo), c.finished_at < _param(conn, hi)]
            _add_rollups(conn, where)
            groups = _aggregate(conn, where, [c.job_type, c.status])
            rows += sum(f.jobs for f in groups.values())
            _add_totals(conn, groups)
            conn.execute(
                ST.update().where(ST.c.id == 1).values(rolled_through=hi, updated_at=utcnow())
            )
            windows += 1
    with rt.engine.connect() as conn:
        through = _aware(conn.execute(select(ST.c.rolled_through)).scalar())
    return {
        "rows": rows,
        "windows": windows,
        "rolled_through": through.isoformat() if through else None,
    }


def _add_rollups(conn: Connection, where: list[Any]) -> None:
    """Add the finished rows matching `where` to the rollups: one INSERT ... SELECT ... ON
    CONFLICT in the database (no row travels through Python)."""
    c = _jobs()
    d = duration_expr(conn.dialect.name)
    day = _day_expr(conn.dialect.name)
    keys = [day, c.business_id, c.job_type, c.status]
    agg = (
        select(*keys, func.count(), func.count(c.started_at), func.coalesce(func.sum(d), 0.0),
               func.max(d))
        .where(c.status.in_(FINAL_STATUSES), *where)
        .group_by(*keys)
    )  # fmt: skip
    insert = _dialect_insert(conn)
    cols = ["day", "business_id", "job_type", "status", "jobs", "ran", "duration_sum",
            "duration_max"]  # fmt: skip
    stmt = insert(R).from_select(cols, agg)
    x = stmt.excluded
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["day", "business_id", "job_type", "status"],
            set_={
                "jobs": R.c.jobs + x.jobs,
                "ran": R.c.ran + x.ran,
                "duration_sum": R.c.duration_sum + x.duration_sum,
                "duration_max": _greatest(conn, R.c.duration_max, x.duration_max),
            },
        )
    )


def _add_totals(conn: Connection, totals: dict[tuple, Figures]) -> None:
    """Add one window's figures per (job type, status) to the totals (the caller holds the
    watermark's lock, so no one else writes them)."""
    have = {
        (r.job_type, r.status): r
        for r in conn.execute(
            select(TOT).where(TOT.c.job_type.in_({t for t, _ in totals}))
        )  # fmt: skip
    }
    rows = []
    for (t, s), window in totals.items():
        f, old = Figures(), have.get((t, s))
        f.add(window)
        if old is not None:
            f.add(Figures(old.jobs, old.ran, old.duration_sum, None, list(old.buckets)))
        rows.append(
            {"job_type": t, "status": s, "jobs": f.jobs, "ran": f.ran,
             "duration_sum": f.duration_sum, "buckets": f.buckets}
        )  # fmt: skip
    _upsert(
        conn,
        TOT,
        rows,
        ["job_type", "status"],
        lambda x: {"jobs": x.jobs, "ran": x.ran, "duration_sum": x.duration_sum,
                   "buckets": x.buckets},
    )  # fmt: skip


def rolled_through(conn: Connection) -> datetime | None:
    return _aware(conn.execute(select(ST.c.rolled_through).where(ST.c.id == 1)).scalar())


def _snapshot(rt: Runtime) -> Any:
    """A connection whose reads see one snapshot (totals and recent rows agree) on PostgreSQL."""
    conn = rt.engine.connect()
    if conn.dialect.name == "postgresql":
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
    return conn


def totals(rt: Runtime) -> dict[tuple[str, str], Figures]:
    """All-time finished jobs per (job type, status): the totals plus the rows since the
    watermark (an index range bounded by one maintenance interval)."""
    c = _jobs()
    with _snapshot(rt) as conn, conn.begin():
        out: dict[tuple[str, str], Figures] = {}
        for r in conn.execute(select(TOT)):
            out[(r.job_type, r.status)] = Figures(
                r.jobs, r.ran, r.duration_sum, None, list(r.buckets)
            )
        since = rolled_through(conn)
        where = [c.finished_at >= _param(conn, since)] if since else [c.finished_at.is_not(None)]
        for key, f in _aggregate(conn, where, [c.job_type, c.status]).items():
            out.setdefault(key, Figures()).add(f)
    return out


def _day(value: Any) -> date:
    """A day from the database (SQLite's date() is text)."""
    return date.fromisoformat(value) if isinstance(value, str) else value


def daily(
    rt: Runtime, *, business_id: int | None = None, days: int = 30
) -> dict[tuple[date, str, str], Figures]:
    """Finished jobs per (UTC day, job type, status) over the last `days` UTC days (today
    included): the rollups of those days plus the rows not rolled up yet, read in one
    snapshot. Pruned rows are in the rollups, so this is the same before and after pruning."""
    from prosaas_core.jobs.store import utcnow

    c = _jobs()
    first = (utcnow() - timedelta(days=max(days, 1) - 1)).date()
    out: dict[tuple[date, str, str], Figures] = {}
    with _snapshot(rt) as conn, conn.begin():
        q = (
            select(R.c.day, R.c.job_type, R.c.status, func.sum(R.c.jobs), func.sum(R.c.ran),
                   func.sum(R.c.duration_sum), func.max(R.c.duration_max))
            .where(R.c.day >= first)
            .group_by(R.c.day, R.c.job_type, R.c.status)
        )  # fmt: skip
        if business_id is not None:
            q = q.where(R.c.business_id == business_id)
        for day, t, s, n, ran, total, top in conn.execute(q):
            out[(_day(day), t, s)] = Figures(int(n), int(ran), float(total or 0), _f(top))
        # rows before the watermark are in the rollups (pruned or not); rows before the first
        # day are outside the window
        start = datetime.combine(first, datetime.min.time(), UTC)
        since = rolled_through(conn)
        if since is not None and since > start:
            start = since
        where = [c.finished_at >= _param(conn, start)]
        if business_id is not None:
            where.append(c.business_id == business_id)
        keys = [_day_expr(conn.dialect.name), c.job_type, c.status]
        for (day, t, s), f in _aggregate(conn, where, keys).items():
            out.setdefault((_day(day), t, s), Figures()).add(f)
    return out


def stats(rt: Runtime, *, business_id: int | None = None, days: int = 30) -> list[dict[str, Any]]:
    """Finished jobs per job type and status over the last `days` UTC days (today included),
    from :func:`daily`: ``[{job_type, status, jobs, avg_seconds, max_seconds}]``."""
    out: dict[tuple[str, str], Figures] = {}
    for (_, t, s), f in daily(rt, business_id=business_id, days=days).items():
        out.setdefault((t, s), Figures()).add(f)
    return [summary(t, s, f) for (t, s), f in sorted(out.items())]


def summary(job_type: str, status: str, f: Figures) -> dict[str, Any]:
    """One group's figures as ``jobs stats`` and the dashboard show them."""
    return {
        "job_type": job_type,
        "status": status,
        "jobs": f.jobs,
        "avg_seconds": round(f.duration_sum / f.ran, 3) if f.ran else None,
        "max_seconds": round(f.duration_max, 3) if f.duration_max is not None else None,
    }


def _dialect_insert(conn: Any) -> Any:
    """The dialect's ``insert`` (both have ``on_conflict_do_update``, with different types)."""
    from sqlalchemy.dialects import postgresql, sqlite

    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
