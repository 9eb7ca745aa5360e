"""Delayed pushes for retries with backoff: a Redis sorted set any worker drains when due.

If Redis loses the set, the row is still ``queued`` with ``run_after``: the sweeper pushes it.
"""

from __future__ import annotations

import logging
import time
import weakref
from typing import TYPE_CHECKING, Any, cast

from prosaas_core.jobs.transport import push, push_timed

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


#: due members taken per round trip, and at most this many pushed per `pump` call
PUMP_BATCH, PUMP_MAX = 500, 5000
#: members of the set read per round trip while looking for a queue's next due time
SCAN_PAGE = 200

# the due members, removed in the same call: a member is taken by exactly one pump
_TAKE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
if #due > 0 then redis.call('ZREM', KEYS[1], unpack(due)) end
return due
"""


def pump(rt: Runtime) -> int:
    """Push every delayed job that is due (PUMP_MAX at most per call). Each is pushed by exactly
    one worker: the one whose call took it off the set (one script per PUMP_BATCH members, then
    one pipeline per PUSH_BATCH pushes, instead of a ZREM and a push per job). A push that fails
    leaves its row ``queued`` and due: the sweeper pushes it. Returns how many were pushed."""
    take = _taker(rt)
    pushed = 0
    for _ in range(0, PUMP_MAX, PUMP_BATCH):
        # the runtime's client returns bytes (redis-py's types cannot know decode_responses)
        due = cast("list[bytes]", take(keys=[DELAYED_KEY], args=[time.time(), PUMP_BATCH]))
        rows = []
        for member in due:
            job_id, queue, timeout = member.decode().split("|")
            rows.append((int(job_id), queue, float(timeout) if timeout else None))
        pushed += len(push_timed(rt, rows))
        if len(due) < PUMP_BATCH:
            break
    return pushed


def _taker(rt: Runtime):
    """The take-due script on the runtime's client, registered once per client."""
    client = rt.redis
    script = _scripts.get(client)
    if script is None:
        script = _scripts.setdefault(client, client.register_script(_TAKE_DUE))
    return script


_scripts: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def next_due(rt: Runtime, queues: list[str]) -> float | None:
    """The earliest due time (epoch seconds) of a delayed job on one of `queues`, or None.
    Reads the set in due order, SCAN_PAGE members at a time, up to the first one that matches."""
    wanted = set(queues)
    start = 0
    while True:
        members = rt.redis.zrange(DELAYED_KEY, start, start + SCAN_PAGE - 1, withscores=True)
        for member, score in cast("list[tuple[bytes, float]]", members):
            if member.decode().split("|")[1] in wanted:
                return score  # members come sorted by due time
        if len(members) < SCAN_PAGE:
            return None
        start += SCAN_PAGE
