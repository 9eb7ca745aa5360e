"""Redis/RQ transport. The RQ job carries only the row id; the row is the source of truth."""

from __future__ import annotations

import logging
import threading
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rq import Queue

    from prosaas_core.runtime import Runtime

log = logging.getLogger("prosaas.jobs")

DISPATCH = "prosaas_core.jobs.dispatch.run_job"

# RQ Queue objects per Redis client and queue name. Building a Queue is cheap, but a new one
# asks the server for its version (an INFO round trip) on its first push; a reused one asks once.
_queues: weakref.WeakKeyDictionary[Any, dict[str, Queue]] = weakref.WeakKeyDictionary()
_queues_lock = threading.Lock()


def rq_job_id(job_id: int) -> str:
    """The RQ id of a job row: deterministic, so the sweeper can ask Redis whether it holds it."""
    return f"prosaas-{job_id}"


def rq_queue(connection: Any, name: str) -> Queue:
    """The RQ queue `name` on `connection`, built once per client."""
    try:
        return _queues[connection][name]
    except (KeyError, TypeError):  # TypeError: a client that cannot be weakly referenced
        pass
    from rq import Queue

    queue = Queue(name, connection=connection)
    with _queues_lock:
        try:
            _queues.setdefault(connection, {})[name] = queue
        except TypeError:
            pass
    return queue


def push(rt: Runtime, job_id: int, queue: str, *, timeout: float | None = None) -> bool:
    """Push the row id onto its RQ queue. False (logged) when Redis is unreachable: the row stays
    queued and the sweeper pushes it later, so accepted work is never lost."""
    from redis.exceptions import RedisError

    try:
        # one MULTI/EXEC round trip: RQ alone sends two (queue registration, then the job)
        with rt.redis.pipeline() as pipe:
            rq_queue(rt.redis, queue).enqueue_call(
                DISPATCH,
                args=(job_id,),
                job_id=rq_job_id(job_id),
                # the handler's own timeout is enforced by dispatch; RQ's is a backstop
                timeout=int(timeout) + 60 if timeout else -1,
                result_ttl=300,
                failure_ttl=86400,
                # what RQ would derive from the call, without its repr() machinery
                description=f"{DISPATCH}({job_id})",
                pipeline=pipe,
            )
            pipe.execute()
        return True
    except RedisError as exc:
        log.warning("Redis unavailable, job %s stays queued for the sweeper: %s", job_id, exc)
        return False
