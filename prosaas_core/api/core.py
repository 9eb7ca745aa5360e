"""The core blueprint: the jobs API. Every query is scoped to the token's business through
``prosaas_core.jobs.control``; another business's job is answered 404 like a missing one."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, jsonify

from prosaas_core.api.openapi import describe
from prosaas_core.api.params import page, parse_query
from prosaas_core.api.schemas import (
    Enqueued,
    EnqueueRequest,
    Error,
    Job,
    JobListQuery,
    JobPage,
)
from prosaas_core.api.support import (
    ApiError,
    authenticated,
    authenticated_in_statement,
    current_business_id,
    current_runtime,
    enqueued_response,
    parse_json,
    unknown_token,
)

bp = Blueprint("prosaas_core", __name__)


def _as_dict(job: Any) -> dict[str, Any]:
    """A job as its tenant sees it: the error's type and safe message, never the traceback
    (that is for operators: ``prosaas jobs show``)."""
    from prosaas_core.jobs.control import job_dict
    from prosaas_core.jobs.errortext import tenant_error

    out = dict(job) if isinstance(job, dict) else job_dict(job)
    out["error"] = tenant_error(out.get("error"))
    return out


@bp.post("/api/jobs")
@authenticated_in_statement
@describe(
    body=EnqueueRequest,
    responses={
        202: (
            "Job accepted: committed, and pushed to its queue right after this answer (a "
            "job due later, when due; a flow-limited one, before this answer if admitted now, "
            "else once admitted) (Location: the job)",
            Enqueued,
        ),
        409: ("A unique job type is already queued or running; details carry its id", Error),
    },
    tags=["jobs"],
)
def create_job():
    """Enqueue a job of an installed type for the caller's business.

    The row is committed before the answer. A job due now of a type without flow limits is
    pushed to Redis behind the answer (the process's pusher, many jobs per round trip), so
    the answer never waits for Redis; a delayed or flow-limited one is scheduled or admitted
    before it (at most ``PROSAAS_PUSH_TIMEOUT`` with Redis hung). Either way a job accepted
    while Redis is down still answers 202 and is pushed later (by the sweeper).
    """
    from prosaas_core.jobs.enqueue import enqueue_for_token

    body = parse_json(EnqueueRequest)
    # the token's lookup is part of the job's INSERT: one statement for the whole request
    res = enqueue_for_token(current_runtime(), g.bearer_token, body.job_type, body.payload,
                            run_at=body.run_at, delay=body.delay)  # fmt: skip
    if res is None:
        raise unknown_token()
    g.business_id = res.business_id
    return enqueued_response(res)


@bp.get("/api/jobs")
@authenticated
@describe(query=JobListQuery, responses={200: ("Jobs, newest first", JobPage)}, tags=["jobs"])
def list_jobs():
    """List the caller's jobs, newest first, filtered by status and type.

    Paginate with ``before_id``: pass the previous page's ``next_before_id``.
    """
    from prosaas_core.jobs import control

    q = parse_query(JobListQuery)
    jobs = control.list_jobs(
        current_runtime(),
        business_id=current_business_id(),
        status=q.status,
        job_type=q.job_type,
        limit=q.limit,
        before_id=q.before_id,
    )
    return jsonify(page([_as_dict(j) for j in jobs], q.limit))


@bp.get("/api/jobs/<id:job_id>")
@authenticated
@describe(responses={200: ("The job", Job)}, tags=["jobs"])
def get_job(job_id: int):
    """One job of the caller's business: status, progress, result, error and timestamps."""
    from prosaas_core.jobs import control

    job = control.get_job(current_runtime(), job_id, business_id=current_business_id())
    if job is None:
        raise ApiError(404, "Not found", f"job {job_id} not found")
    return jsonify(_as_dict(job))


@bp.post("/api/jobs/<id:job_id>/cancel")
@authenticated
@describe(
    responses={
        200: ("The job, cancelled (or with cancellation requested while it runs)", Job),
        409: ("The job has already finished", Error),
    },
    tags=["jobs"],
)
def cancel_job(job_id: int):
    """Cancel a queued job, or ask a running one to stop at its next check."""
    from prosaas_core.jobs import control

    job = control.cancel_job(current_runtime(), job_id, business_id=current_business_id())
    return jsonify(_as_dict(job))


@bp.post("/api/jobs/<id:job_id>/retry")
@authenticated
@describe(
    responses={
        202: ("The job, queued again", Job),
        409: ("Only failed or cancelled jobs can be retried", Error),
    },
    tags=["jobs"],
)
def retry_job(job_id: int):
    """Queue a failed or cancelled job again (409 for any other status)."""
    from flask import url_for

    from prosaas_core.jobs import control

    job = _as_dict(control.retry_job(current_runtime(), job_id, business_id=current_business_id()))
    resp = jsonify(job)
    resp.status_code = 202
    resp.headers["Location"] = url_for("prosaas_core.get_job", job_id=job["id"])
    return resp
