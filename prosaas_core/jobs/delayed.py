"""Delayed pushes for retries with backoff: a Redis sorted set any worker drains when due.

If Redis loses the set, the row is still ``queued`` with ``run_after``: the sweeper pushes it.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, cast

from prosaas_core.jobs.transport import push

if TYPE_CHECKING:
    from prosaas_core.runtime import Runtime

log = logging.getLogger("prosaas.jobs")

DELAYED_KEY = "prosaas:delayed"


def schedule(rt: Runtime, job_id: int, queue: str, delay: float, *, timeout: float | None) -> None:
    """Push the job after `delay` seconds (now when `delay` <= 0)."""
    if delay <= 0:
        push(rt, job_id, queue, timeout=timeout)
        return
    from redis.exceptions import RedisError

    member = f"{job_id}|{queue}|{timeout or ''}"
    try:
        rt.redis.zadd(DELAYED_KEY, {member: time.time() + delay})
    except RedisError as exc:
        log.warning("Redis unavailable, job %s retry left to the sweeper: %s", job_id, exc)


def pump(rt: Runtime) -> int:
    """Push every delayed job that is due. Each is pushed by exactly one worker: the one whose
    ZREM removed it. Returns how many this call pushed."""
    # the runtime's client returns bytes (redis-py's types cannot know decode_responses)
    due = rt.redis.zrangebyscore(DELAYED_KEY, "-inf", time.time(), start=0, num=500)
    pushed = 0
    for member in cast("list[bytes]", due):
        if rt.redis.zrem(DELAYED_KEY, member) != 1:
            continue  # another worker took it
        job_id, queue, timeout = member.decode().split("|")
        push(rt, int(job_id), queue, timeout=float(timeout) if timeout else None)
        pushed += 1
    return pushed


def next_due(rt: Runtime, queues: list[str]) -> float | None:
    """The earliest due time (epoch seconds) of a delayed job on one of `queues`, or None."""
    wanted = set(queues)
    members = rt.redis.zrange(DELAYED_KEY, 0, -1, withscores=True)
    for member, score in cast("list[tuple[bytes, float]]", members):
        if member.decode().split("|")[1] in wanted:
            return score  # members come sorted by due time
    return None
