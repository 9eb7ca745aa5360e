"""The durable download tasks: create, claim, renew, finish. PostgreSQL is the source of truth.

Every write a worker makes to a claimed task carries the ``fence`` it got when it claimed it and
requires ``status='running'``: once another worker has re-claimed the task (after a lease
expired) or the task was put back, the old worker's writes match no row and change nothing.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, tuple_, update
from sqlalchemy.orm import Session

from prosaas_recordings.tables import calls, recording_tasks

T = recording_tasks


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Task:
    """A claimed task, as the worker holding it sees it."""

    id: int
    business_id: int
    call_sid: str
    recording_sid: str
    recording_url: str
    duration: int | None
    attempts: int  # including the current one
    fence: int


def dialect_name(db: Any) -> str:
    """``postgresql`` or ``sqlite``, for a Session or a Connection."""
    bind = db.get_bind() if isinstance(db, Session) else db
    return bind.dialect.name


def dialect_insert(session: Session):
    """The insert construct of the session's dialect (for ON CONFLICT DO NOTHING)."""
    if dialect_name(session) == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


def create_task(
    session: Session,
    *,
    business_id: int,
    call_sid: str,
    recording_sid: str,
    recording_url: str,
    duration: int | None,
) -> int | None:
    """Insert a queued task; None when one exists for this recording already (idempotent)."""
    ts = now()
    stmt = (
        dialect_insert(session)(T)
        .values(
            business_id=business_id,
            call_sid=call_sid,
            recording_sid=recording_sid,
            recording_url=recording_url,
            duration=duration,
            status="queued",
            attempts=0,
            fence=0,
            run_after=ts,
            created_at=ts,
            updated_at=ts,
        )
        .on_conflict_do_nothing(index_elements=["recording_sid"])
        .returning(T.c.id)
    )
    return session.execute(stmt).scalar_one_or_none()


def _due(ts: datetime):
    """Queued and due, or running under a lease that expired (its worker died)."""
    return or_(
        and_(T.c.status == "queued", T.c.run_after <= ts),
        and_(T.c.status == "running", T.c.lease_until < ts),
    )


def lock_due(
    session: Session, *, per_business: int, limit: int, skip_businesses: Collection[int] = ()
) -> list[Any]:
    """Lock up to `limit` due tasks, at most `per_business` of each business, taking the oldest
    of every business before the second of any (round-robin), none of `skip_businesses`.

    ``FOR UPDATE SKIP LOCKED`` on PostgreSQL: rows another worker is claiming right now are
    skipped, never waited for and never taken twice. The locks last until the caller's
    transaction ends; `mark_running` turns the rows into claims within it.
    """
    ts = now()
    rank = (
        func.row_number()
        .over(partition_by=T.c.business_id, order_by=(T.c.run_after, T.c.id))
        .label("rank")
    )
    due = [_due(ts)]
    if skip_businesses:
        due.append(T.c.business_id.not_in(list(skip_businesses)))
    ranked = select(T.c.id, rank).where(*due).subquery()
    stmt = (
        select(T)
        .join(ranked, ranked.c.id == T.c.id)
        .where(ranked.c.rank <= per_business, _due(ts))
        .order_by(ranked.c.rank, T.c.run_after, T.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=T)
    )
    return list(session.execute(stmt))


def _task(row: Any, *, bumped: int = 0) -> Task:
    """A claimed task from a row; `bumped` when the row was read before the claim's
    ``attempts + 1`` / ``fence + 1``."""
    return Task(
        id=row.id,
        business_id=row.business_id,
        call_sid=row.call_sid,
        recording_sid=row.recording_sid,
        recording_url=row.recording_url,
        duration=row.duration,
        attempts=row.attempts + bumped,
        fence=row.fence + bumped,
    )


def mark_running(session: Session, rows: list[Any], *, worker: str, lease: float) -> list[Task]:
    """Claim locked rows in one statement: running, leased to `worker`, fence and attempts
    bumped (the rows are locked by this transaction, so ``fence + 1`` is what we return)."""
    if not rows:
        return []
    ts = now()
    session.execute(
        update(T)
        .where(T.c.id.in_([r.id for r in rows]))
        .values(
            status="running",
            worker=worker,
            lease_until=ts + timedelta(seconds=lease),
            fence=T.c.fence + 1,
            attempts=T.c.attempts + 1,
            updated_at=ts,
        )
    )
    return [_task(row, bumped=1) for row in rows]


# The hot statements on PostgreSQL, as fixed SQL run with ``exec_driver_sql``: building and
# caching SQLAlchemy constructs for them cost more CPU per download than the download itself.
_DUE_SQL = (
    "((t.status = 'queued' AND t.run_after <= %(ts)s)"
    " OR (t.status = 'running' AND t.lease_until < %(ts)s))"
)
_CLAIM_PG = f"""
WITH held AS (
    SELECT * FROM unnest(%(held_ids)s::bigint[], %(held_counts)s::int[]) AS h(business_id, n)
), ranked AS (
    SELECT t.id, row_number() OVER (PARTITION BY t.business_id ORDER BY t.run_after, t.id) AS rank
    FROM {T.name} t
    WHERE {_DUE_SQL} AND t.business_id <> ALL(%(full_ids)s::bigint[])
), picked AS (
    SELECT t.id, r.rank
    FROM {T.name} t
    JOIN ranked r ON r.id = t.id
    LEFT JOIN held h ON h.business_id = t.business_id
    WHERE r.rank <= %(per_business)s - coalesce(h.n, 0) AND {_DUE_SQL}
    ORDER BY r.rank, t.run_after, t.id
    LIMIT %(limit)s
    FOR UPDATE OF t SKIP LOCKED
)
UPDATE {T.name} t
SET status = 'running', worker = %(worker)s, lease_until = %(lease_until)s,
    fence = t.fence + 1, attempts = t.attempts + 1, updated_at = %(ts)s
FROM picked p
WHERE t.id = p.id
RETURNING t.id, t.business_id, t.call_sid, t.recording_sid, t.recording_url, t.duration,
    t.attempts, t.fence, t.run_after, p.rank
"""
_COMPLETE_PG = f"""
WITH done AS (
    UPDATE {T.name}
    SET status = 'done', file_path = %(path)s, bytes = %(size)s, last_error = NULL,
        lease_until = NULL, finished_at = %(ts)s, updated_at = %(ts)s
    WHERE id = %(id)s AND fence = %(fence)s AND status = 'running'
    RETURNING id
), call AS (
    UPDATE {calls.name}
    SET recording_sid = %(recording_sid)s, recording_status = 'downloaded',
        recording_path = %(path)s, recording_bytes = %(size)s,
        recording_duration = %(duration)s, recording_error = NULL, updated_at = %(ts)s
    WHERE call_sid = %(call_sid)s AND business_id = %(business_id)s
      AND EXISTS (SELECT 1 FROM done)
    RETURNING 1
)
SELECT (SELECT count(*) FROM done), (SELECT count(*) FROM call)
"""


def _driver(db: Any):
    """The Connection under `db` (a Session's, or `db` itself)."""
    return db.connection() if isinstance(db, Session) else db


def claim_due(
    db: Any,
    *,
    quota: dict[int, int],
    per_business: int,
    limit: int,
    worker: str,
    lease: float,
) -> list[Task]:
    """Claim up to `limit` due tasks for `worker`, oldest of every business first (round-robin),
    at most `per_business` of each business less its `quota` entry (what the worker holds).

    PostgreSQL: one ``UPDATE ... FROM (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING``, i.e. one
    round trip on an autocommit connection. Elsewhere (SQLite): `lock_due` then
    `mark_running` in the caller's transaction."""
    if limit <= 0:
        return []
    full = [b for b, n in quota.items() if n >= per_business]
    if dialect_name(db) != "postgresql":
        rows = lock_due(
            db,
            per_business=per_business,
            limit=limit + sum(quota.values()),
            skip_businesses=full,
        )
        mine, chosen = dict(quota), []
        for row in rows:
            if len(chosen) < limit and mine.get(row.business_id, 0) < per_business:
                mine[row.business_id] = mine.get(row.business_id, 0) + 1
                chosen.append(row)
        return mark_running(db, chosen, worker=worker, lease=lease)
    ts = now()
    held = [(b, n) for b, n in quota.items() if n > 0]
    rows = _driver(db).exec_driver_sql(
        _CLAIM_PG,
        {
            "ts": ts,
            "lease_until": ts + timedelta(seconds=lease),
            "worker": worker,
            "per_business": per_business,
            "limit": limit,
            "full_ids": full,
            "held_ids": [b for b, _ in held],
            "held_counts": [n for _, n in held],
        },
    )
    # RETURNING gives the values after the update
    return [_task(r) for r in sorted(rows, key=lambda r: (r.rank, r.run_after, r.id))]


def _mine(task: Task):
    return and_(T.c.id == task.id, T.c.fence == task.fence, T.c.status == "running")


def renew(session: Any, tasks: list[Task], *, lease: float) -> set[int]:
    """Extend the leases of `tasks` (one statement); return the ids this worker no longer holds."""
    if not tasks:
        return set()
    res = session.execute(
        update(T)
        .where(
            tuple_(T.c.id, T.c.fence).in_([(t.id, t.fence) for t in tasks]),
            T.c.status == "running",
        )
        .values(lease_until=now() + timedelta(seconds=lease))
        .returning(T.c.id)
    )
    held = set(res.scalars())
    return {t.id for t in tasks} - held


def complete(session: Any, task: Task, *, path: str, size: int) -> bool:
    """Record a finished download on the task and its call; False if the claim was lost.

    PostgreSQL: one statement (the call is updated only if the task was), so on an autocommit
    connection it is one round trip and still atomic."""
    ts = now()
    if dialect_name(session) == "postgresql":
        row = (
            _driver(session)
            .exec_driver_sql(
                _COMPLETE_PG,
                {
                    "id": task.id,
                    "fence": task.fence,
                    "path": path,
                    "size": size,
                    "ts": ts,
                    "recording_sid": task.recording_sid,
                    "duration": task.duration,
                    "call_sid": task.call_sid,
                    "business_id": task.business_id,
                },
            )
            .first()
        )
        return bool(row[0])
    res = session.execute(
        update(T)
        .where(_mine(task))
        .values(
            status="done",
            file_path=path,
            bytes=size,
            last_error=None,
            lease_until=None,
            finished_at=ts,
            updated_at=ts,
        )
    )
    if not res.rowcount:
        return False
    session.execute(
        update(calls)
        .where(calls.c.call_sid == task.call_sid, calls.c.business_id == task.business_id)
        .values(
            recording_sid=task.recording_sid,
            recording_status="downloaded",
            recording_path=path,
            recording_bytes=size,
            recording_duration=task.duration,
            recording_error=None,
            updated_at=ts,
        )
    )
    return True


def _requeue(session: Session, task: Task, delay: float, **values: Any) -> bool:
    """Back to queued, due after `delay` seconds, lease dropped; fenced on the claim."""
    ts = now()
    res = session.execute(
        update(T)
        .where(_mine(task))
        .values(
            status="queued",
            run_after=ts + timedelta(seconds=delay),
            lease_until=None,
            updated_at=ts,
            **values,
        )
    )
    return bool(res.rowcount)


def retry_later(session: Session, task: Task, *, error: str, delay: float) -> bool:
    """Put the task back with backoff after a transient failure."""
    return _requeue(session, task, delay, last_error=error)


def fail(session: Session, task: Task, *, error: str) -> bool:
    """Record a permanent failure on the task and its call."""
    ts = now()
    res = session.execute(
        update(T)
        .where(_mine(task))
        .values(status="failed", last_error=error, lease_until=None, finished_at=ts, updated_at=ts)
    )
    if not res.rowcount:
        return False
    session.execute(
        update(calls)
        .where(calls.c.call_sid == task.call_sid, calls.c.business_id == task.business_id)
        .values(recording_status="failed", recording_error=error, updated_at=ts)
    )
    return True


def put_back(session: Session, task: Task, *, delay: float = 0.0) -> bool:
    """Give a task back without counting the attempt (shutdown, no slot in time)."""
    return _requeue(session, task, delay, attempts=T.c.attempts - 1)


def store_transcript(session: Session, task: Task, text: str) -> None:
    session.execute(
        update(calls)
        .where(calls.c.call_sid == task.call_sid, calls.c.business_id == task.business_id)
        .values(transcript=text, updated_at=now())
    )


def count_due(session: Session) -> int:
    """Tasks due now that nobody holds: what ``prosaas doctor`` reports as pending."""
    return session.execute(select(func.count()).select_from(T).where(_due(now()))).scalar_one()
