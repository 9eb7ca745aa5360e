"""Fenced state changes of one job row.

Every write after the claim carries the claim's fencing token (``fence``): the sweeper bumps it
when it rescues a job, so a worker that was declared dead can never overwrite the outcome.
Each function is one statement (one database round trip on an autocommit connection).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, or_, update

from prosaas_core.models import BackgroundJob

T = BackgroundJob.__table__
c = T.c


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Claim:
    """What a successful claim returns: enough to run the job without another read."""

    id: int
    business_id: int
    job_type: str
    queue: str
    payload: Any
    state: Any
    attempt: int
    max_attempts: int
    fence: int
    cancel_requested: bool


def claim(conn: Connection, job_id: int, worker: str) -> Claim | None:
    """Atomically move a queued row to running; None when it is not claimable (already claimed,
    finished, cancelled, or a retry whose backoff has not elapsed): a duplicate delivery."""
    now = utcnow()
    stmt = (
        update(T)
        .where(
            c.id == job_id,
            c.status == "queued",
            or_(c.run_after.is_(None), c.run_after <= now),
        )
        .values(
            status="running",
            attempts=c.attempts + 1,
            fence=c.fence + 1,
            worker=worker,
            started_at=now,
            heartbeat_at=now,
            updated_at=now,
            run_after=None,
        )
        .returning(
            c.id,
            c.business_id,
            c.job_type,
            c.queue,
            c.payload,
            c.state,
            c.attempts,
            c.max_attempts,
            c.fence,
            c.cancel_requested,
        )
    )
    row = conn.execute(stmt).first()
    return Claim(*row) if row is not None else None


def _fenced(job_id: int, fence: int):
    return and_(c.id == job_id, c.fence == fence, c.status == "running")


def touch(
    conn: Connection,
    job_id: int,
    fence: int,
    *,
    processed: int | None = None,
    total: int | None = None,
    state: Any = None,
    set_state: bool = False,
) -> bool | None:
    """Heartbeat, with progress and/or a checkpoint. Returns the row's ``cancel_requested``, or
    None when the write was refused (the job is no longer ours)."""
    now = utcnow()
    values: dict[str, Any] = {"heartbeat_at": now, "updated_at": now}
    if processed is not None:
        values["processed"] = processed
    if total is not None:
        values["total"] = total
    if set_state:
        values["state"] = state
    stmt = update(T).where(_fenced(job_id, fence)).values(**values).returning(c.cancel_requested)
    row = conn.execute(stmt).first()
    return None if row is None else bool(row[0])


def finish(
    conn: Connection,
    job_id: int,
    fence: int,
    status: str,
    *,
    result: Any = None,
    error: str | None = None,
    processed: int | None = None,
    total: int | None = None,
) -> bool:
    """Record the outcome (succeeded, failed or cancelled). False when refused."""
    now = utcnow()
    values: dict[str, Any] = {
        "status": status,
        "result": result,
        "error": error,
        "finished_at": now,
        "updated_at": now,
        "heartbeat_at": now,
    }
    if processed is not None:
        values["processed"] = processed
    if total is not None:
        values["total"] = total
    res = conn.execute(update(T).where(_fenced(job_id, fence)).values(**values))
    return res.rowcount == 1


def requeue(
    conn: Connection,
    job_id: int,
    fence: int,
    *,
    delay: float = 0.0,
    error: str | None = None,
    refund_attempt: bool = False,
    processed: int | None = None,
    total: int | None = None,
) -> bool:
    """Put a running job back to queued: a retry after `delay` seconds, or (with
    `refund_attempt`) an attempt interrupted by a shutdown that should not count."""
    now = utcnow()
    values: dict[str, Any] = {
        "status": "queued",
        "worker": None,
        "updated_at": now,
        "run_after": now + timedelta(seconds=delay) if delay > 0 else None,
    }
    if error is not None:
        values["error"] = error
    if refund_attempt:
        values["attempts"] = c.attempts - 1
    if processed is not None:
        values["processed"] = processed
    if total is not None:
        values["total"] = total
    res = conn.execute(update(T).where(_fenced(job_id, fence)).values(**values))
    return res.rowcount == 1
