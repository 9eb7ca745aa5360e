"""Reading and steering jobs: the one implementation behind the CLI and the HTTP API.

A job of another business is reported exactly like a missing one (NotFoundError).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from prosaas_core.errors import ConflictError, NotFoundError
from prosaas_core.jobs.store import utcnow
from prosaas_core.models import JOB_STATUSES, BackgroundJob

if TYPE_CHECKING:
    from sqlalchemy import CursorResult

    from prosaas_core.runtime import Runtime

log = logging.getLogger("prosaas.jobs")

RETRYABLE = ("failed", "cancelled")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def job_dict(job: BackgroundJob) -> dict[str, Any]:
    """The JSON shape of a job, shared by ``prosaas jobs ... --json`` and the HTTP API."""
    return {
        "id": job.id,
        "job_type": job.job_type,
        "business_id": job.business_id,
        "queue": job.queue,
        "status": job.status,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "processed": job.processed,
        "total": job.total,
        "payload": job.payload,
        "result": job.result,
        "error": job.error,
        "state": job.state,
        "worker": job.worker,
        "cancel_requested": job.cancel_requested,
        "created_at": _iso(job.created_at),
        "updated_at": _iso(job.updated_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "heartbeat_at": _iso(job.heartbeat_at),
        "run_after": _iso(job.run_after),
        "parked": job.parked,
    }


def _load(s, job_id: int, business_id: int | None) -> BackgroundJob:
    job = s.get(BackgroundJob, job_id)
    if job is None or (business_id is not None and job.business_id != business_id):
        raise NotFoundError(f"job {job_id} not found")
    return job


def get_job(rt: Runtime, job_id: int, *, business_id: int | None = None) -> dict[str, Any]:
    """One job as `job_dict`; NotFoundError if missing or (with `business_id`) not that
    business's."""
    with rt.session() as s:
        return job_dict(_load(s, job_id, business_id))


def list_jobs(
    rt: Runtime,
    *,
    business_id: int | None = None,
    status: str | None = None,
    job_type: str | None = None,
    limit: int = 50,
    before_id: int | None = None,
) -> list[dict[str, Any]]:
    """Jobs newest first, filtered; page with `before_id` (the last id of the previous page)."""
    if status is not None and status not in JOB_STATUSES:
        raise ValueError(f"unknown status {status!r}; one of {', '.join(JOB_STATUSES)}")
    limit = max(1, min(int(limit), 1000))
    q = select(BackgroundJob).order_by(BackgroundJob.id.desc()).limit(limit)
    if business_id is not None:
        q = q.where(BackgroundJob.business_id == business_id)
    if status is not None:
        q = q.where(BackgroundJob.status == status)
    if job_type is not None:
        q = q.where(BackgroundJob.job_type == job_type)
    if before_id is not None:
        q = q.where(BackgroundJob.id < before_id)
    with rt.session() as s:
        return [job_dict(j) for j in s.scalars(q)]


def cancel_job(rt: Runtime, job_id: int, *, business_id: int | None = None) -> dict[str, Any]:
    """Cancel a job: a queued one at once; a running one at its handler's next should_stop().
    ConflictError when it already ended."""
    T = BackgroundJob
    now = utcnow()
    with rt.session() as s:
        job = _load(s, job_id, business_id)
        # queued -> cancelled in one conditional statement, so a racing claim cannot also win
        done = cast(
            "CursorResult[Any]",
            s.execute(
                update(T)
                .where(T.id == job_id, T.status == "queued")
                .values(status="cancelled", cancel_requested=True, finished_at=now, updated_at=now)
            ),
        ).rowcount
        if not done:
            done = cast(
                "CursorResult[Any]",
                s.execute(
                    update(T)
                    .where(T.id == job_id, T.status == "running")
                    .values(cancel_requested=True, updated_at=now)
                ),
            ).rowcount
        if not done:
            s.refresh(job)
            raise ConflictError(f"job {job_id} is already {job.status}; nothing to cancel")
        s.refresh(job)
        log.info("Cancel requested job_id=%s status=%s", job_id, job.status)
        return job_dict(job)


def retry_job(rt: Runtime, job_id: int, *, business_id: int | None = None) -> dict[str, Any]:
    """Queue a failed or cancelled job again with its job type's number of attempts more (it
    resumes from its last checkpoint; ``ctx.attempt`` keeps counting). ConflictError for any
    other status."""
    from prosaas_core.jobs.transport import push

    T = BackgroundJob
    now = utcnow()
    with rt.session() as s:
        job = _load(s, job_id, business_id)
        jt = rt.registry.job_types.get(job.job_type)
        more = jt.max_attempts if jt is not None else 1
    try:
        with rt.session() as s:
            job = _load(s, job_id, business_id)
            done = cast(
                "CursorResult[Any]",
                s.execute(
                    update(T)
                    .where(T.id == job_id, T.status.in_(RETRYABLE))
                    .values(
                        status="queued",
                        max_attempts=T.attempts + more,
                        cancel_requested=False,
                        error=None,
                        result=None,
                        worker=None,
                        run_after=None,
                        parked=None,  # a retried job meets its flow limits again at its start
                        finished_at=None,
                        updated_at=now,
                    )
                ),
            ).rowcount
            if not done:
                s.refresh(job)
                raise ConflictError(
                    f"job {job_id} is {job.status}; only failed or cancelled jobs can be retried"
                )
            s.refresh(job)
            queue, job_type = job.queue, job.job_type
            out = job_dict(job)
    except IntegrityError:
        raise ConflictError(
            f"job {job_id}: another job of this type is already active for the business"
        ) from None
    push(rt, job_id, queue, timeout=jt.timeout if jt else None)
    log.info("Retry job_id=%s job_type=%s", job_id, job_type)
    return out
