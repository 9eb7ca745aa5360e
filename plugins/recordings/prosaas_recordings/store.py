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

from sqlalchemy import and_, func, or_, select, update
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


def dialect_insert(session: Session):
    """The insert construct of the session's dialect (for ON CONFLICT DO NOTHING)."""
    if session.get_bind().dialect.name == "postgresql":
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
    return [
        Task(
            id=row.id,
            business_id=row.business_id,
            call_sid=row.call_sid,
            recording_sid=row.recording_sid,
            recording_url=row.recording_url,
            duration=row.duration,
            attempts=row.attempts + 1,
            fence=row.fence + 1,
        )
        for row in rows
    ]


def _mine(task: Task):
    return and_(T.c.id == task.id, T.c.fence == task.fence, T.c.status == "running")


def renew(session: Session, tasks: list[Task], *, lease: float) -> set[int]:
    """Extend the leases of `tasks`; return the ids this worker no longer holds."""
    if not tasks:
        return set()
    ts = now()
    held = set()
    for task in tasks:
        res = session.execute(
            update(T).where(_mine(task)).values(lease_until=ts + timedelta(seconds=lease))
        )
        if res.rowcount:
            held.add(task.id)
    return {t.id for t in tasks} - held


def complete(session: Session, task: Task, *, path: str, size: int) -> bool:
    """Record a finished download on the task and its call; False if the claim was lost."""
    ts = now()
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


def retry_later(session: Session, task: Task, *, error: str, delay: float) -> bool:
    """Put the task back with backoff after a transient failure."""
    ts = now()
    res = session.execute(
        update(T)
        .where(_mine(task))
        .values(
            status="queued",
            run_after=ts + timedelta(seconds=delay),
            lease_until=None,
            last_error=error,
            updated_at=ts,
        )
    )
    return bool(res.rowcount)


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
    ts = now()
    res = session.execute(
        update(T)
        .where(_mine(task))
        .values(
            status="queued",
            run_after=ts + timedelta(seconds=delay),
            lease_until=None,
            attempts=T.c.attempts - 1,
            updated_at=ts,
        )
    )
    return bool(res.rowcount)


def store_transcript(session: Session, task: Task, text: str) -> None:
    session.execute(
        update(calls)
        .where(calls.c.call_sid == task.call_sid, calls.c.business_id == task.business_id)
        .values(transcript=text, updated_at=now())
    )


def count_due(session: Session) -> int:
    """Tasks due now that nobody holds: what ``prosaas doctor`` reports as pending."""
    return session.execute(select(func.count()).select_from(T).where(_due(now()))).scalar_one()
