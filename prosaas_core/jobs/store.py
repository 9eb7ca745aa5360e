"""Fenced state changes of one job row.

Every write after the claim carries the claim's fencing token (``fence``): the sweeper bumps it
when it rescues a job, so a worker that was declared dead can never overwrite the outcome.
Each function is one statement (one database round trip on an autocommit connection).

`conn` is a SQLAlchemy ``Connection`` or, on PostgreSQL, a bare psycopg2 cursor (the worker's
hot path). On PostgreSQL the statements are fixed driver SQL: no statement is built, compiled or
cache-keyed per job, which was a third of a trivial job's worker time. Other databases (SQLite
in development) take the SQLAlchemy Core path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, or_, update

from prosaas_core.models import BackgroundJob

T = BackgroundJob.__table__
c = T.c


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
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


_RETURNING = (
    "id, business_id, job_type, queue, payload, state, attempts, max_attempts, fence, "
    "cancel_requested"
)
_FENCED = "WHERE id = %(id)s AND fence = %(fence)s AND status = 'running'"
# COALESCE(param, column): a None parameter leaves the column as it is
_PROGRESS = "processed = COALESCE(%(processed)s, processed), total = COALESCE(%(total)s, total)"

CLAIM_SQL = (
    "UPDATE background_jobs SET status = 'running', attempts = attempts + 1, fence = fence + 1, "
    "worker = %(worker)s, started_at = %(now)s, heartbeat_at = %(now)s, updated_at = %(now)s, "
    "run_after = NULL "
    "WHERE id = %(id)s AND status = 'queued' AND (run_after IS NULL OR run_after <= %(now)s) "
    f"AND parked IS NULL RETURNING {_RETURNING}"
)
TOUCH_SQL = (
    f"UPDATE background_jobs SET heartbeat_at = %(now)s, updated_at = %(now)s, {_PROGRESS} "
    f"{_FENCED} RETURNING cancel_requested"
)
TOUCH_STATE_SQL = (
    "UPDATE background_jobs SET heartbeat_at = %(now)s, updated_at = %(now)s, "
    f"state = %(state)s, {_PROGRESS} {_FENCED} RETURNING cancel_requested"
)
FINISH_SQL = (
    "UPDATE background_jobs SET status = %(status)s, result = %(result)s, error = %(error)s, "
    "finished_at = %(now)s, updated_at = %(now)s, heartbeat_at = %(now)s, "
    f"{_PROGRESS} {_FENCED}"
)
REQUEUE_SQL = (
    "UPDATE background_jobs SET status = 'queued', worker = NULL, updated_at = %(now)s, "
    "run_after = %(run_after)s, error = COALESCE(%(error)s, error), "
    f"attempts = attempts - %(refund)s, {_PROGRESS} {_FENCED}"
)


PARK_SQL = (
    "UPDATE background_jobs SET status = 'queued', worker = NULL, updated_at = %(now)s, "
    "run_after = %(run_after)s, parked = %(parked)s, attempts = attempts - 1 "
    f"{_FENCED}"
)


def _driver(conn: Any) -> bool:
    """True when `conn` takes the PostgreSQL driver SQL above."""
    return not isinstance(conn, Connection) or conn.dialect.name == "postgresql"


def _execute(conn: Any, sql: str, params: dict[str, Any]) -> Any:
    """Run driver SQL on a cursor or a SQLAlchemy connection; the answer has fetchone() and
    rowcount either way."""
    if isinstance(conn, Connection):
        return conn.exec_driver_sql(sql, params)
    conn.execute(sql, params)
    return conn


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def claim(conn: Any, job_id: int, worker: str) -> Claim | None:
    """Atomically move a queued row to running; None when it is not claimable (already claimed,
    finished, cancelled, or a retry whose backoff has not elapsed): a duplicate delivery."""
    now = utcnow()
    if _driver(conn):
        row = _execute(conn, CLAIM_SQL, {"id": job_id, "worker": worker, "now": now}).fetchone()
        return Claim(*row) if row is not None else None
    stmt = (
        update(T)
        .where(
            c.id == job_id,
            c.status == "queued",
            or_(c.run_after.is_(None), c.run_after <= now),
            c.parked.is_(None),
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
    conn: Any,
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
    if _driver(conn):
        params = {"id": job_id, "fence": fence, "now": now, "processed": processed}
        params["total"] = total
        if set_state:
            params["state"] = _json(state)
        row = _execute(conn, TOUCH_STATE_SQL if set_state else TOUCH_SQL, params).fetchone()
        return None if row is None else bool(row[0])
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
    conn: Any,
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
    if _driver(conn):
        params = {
            "id": job_id,
            "fence": fence,
            "status": status,
            "result": _json(result),
            "error": error,
            "now": now,
            "processed": processed,
            "total": total,
        }
        return _execute(conn, FINISH_SQL, params).rowcount == 1
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
    conn: Any,
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
    run_after = now + timedelta(seconds=delay) if delay > 0 else None
    if _driver(conn):
        params = {
            "id": job_id,
            "fence": fence,
            "now": now,
            "run_after": run_after,
            "error": error,
            "refund": 1 if refund_attempt else 0,
            "processed": processed,
            "total": total,
        }
        return _execute(conn, REQUEUE_SQL, params).rowcount == 1
    values: dict[str, Any] = {
        "status": "queued",
        "worker": None,
        "updated_at": now,
        "run_after": run_after,
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


def park(conn: Any, job_id: int, fence: int, reason: str, *, look_again: float) -> bool:
    """Hand a claimed job back unrun because its business is at a flow limit: ``queued`` again,
    outside Redis, the attempt not counted, `reason` shown to operators; the flow waker looks at
    it again within `look_again` seconds (sooner when a slot frees). False when refused."""
    now = utcnow()
    run_after = now + timedelta(seconds=look_again)
    if _driver(conn):
        params = {"id": job_id, "fence": fence, "now": now, "run_after": run_after}
        params["parked"] = reason[:200]
        return _execute(conn, PARK_SQL, params).rowcount == 1
    values = {
        "status": "queued",
        "worker": None,
        "updated_at": now,
        "run_after": run_after,
        "parked": reason[:200],
        "attempts": c.attempts - 1,
    }
    res = conn.execute(update(T).where(_fenced(job_id, fence)).values(**values))
    return res.rowcount == 1
