"""Redis/RQ transport. The RQ job carries only the row id; the row is the source of truth."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prosaas_core.runtime import Runtime

log = logging.getLogger("prosaas.jobs")

DISPATCH = "prosaas_core.jobs.dispatch.run_job"


def rq_job_id(job_id: int) -> str:
    """The RQ id of a job row: deterministic, so the sweeper can ask Redis whether it holds it."""
    return f"prosaas-{job_id}"


def push(rt: Runtime, job_id: int, queue: str, *, timeout: float | None = None) -> bool:
    """Push the row id onto its RQ queue. False (logged) when Redis is unreachable: the row stays
    queued and the sweeper pushes it later, so accepted work is never lost."""
    from redis.exceptions import RedisError
    from rq import Queue

    try:
        Queue(queue, connection=rt.redis).enqueue_call(
            DISPATCH,
            args=(job_id,),
            job_id=rq_job_id(job_id),
            # the handler's own timeout is enforced by dispatch; RQ's is a backstop
            timeout=int(timeout) + 60 if timeout else -1,
            result_ttl=300,
            failure_ttl=86400,
        )
        return True
    except RedisError as exc:
        log.warning("Redis unavailable, job %s stays queued for the sweeper: %s", job_id, exc)
        return False
