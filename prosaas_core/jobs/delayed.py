"""Delayed pushes for retries with backoff: a Redis sorted set any worker drains when due.

If Redis loses the set, the row is still ``queued`` with ``run_after``: the sweeper pushes it.
"""

from __future__ import annotations

import logging
import time
import weakref
from typing import TYPE_CHECKING, Any, cast

from prosaas_core.jobs import pushlog
from prosaas_core.jobs.transport import push, push_client, push_failed, push_timed, skipping

if TYPE_CHECKING:
    from prosaas_core.runtime import Runtime

log = logging.getLogger("prosaas.jobs")

DELAYED_KEY = "prosaas:delayed"


def schedule(
    rt: Runtime,
    job_id: int,
    queue: str,
    delay: float,
    *,
    timeout: float | None,
    request: bool = False,
) -> bool:
    """Push the job after `delay` seconds (now when `delay` <= 0); False when Redis did not
    take it (the row waits for the sweeper, which pushes it once due). `request`: somebody
    waits (an enqueue): on the push client and its skip window, as a push, not the runtime's
    10 s client a worker's retry uses."""
    if delay <= 0:
        return push(rt, job_id, queue, timeout=timeout)
    from redis.exceptions import RedisError

    member = f"{job_id}|{queue}|{timeout or ''}"
    if request and skipping(rt, job_id):
        return False
    started = time.monotonic()
    try:
        (push_client(rt) if request else rt.redis).zadd(DELAYED_KEY, {member: time.time() + delay})
    except RedisError as exc:
        if request:
            push_failed(rt, job_id, exc, started)
        else:
            log.warning("Redis unavailable, job %s retry left to the sweeper: %s", job_id, exc)
        return False
    if request:
        pushlog.pushed(rt)
    return True


#: due members taken per round trip (each is an argument of one ZREM: keep it far below Lua's
#: stack limit of about 8,000), and at most this many pushed per `pump` call
PUMP_BATCH, PUMP_MAX = 500, 5000

# the due members, removed in the same call: a member is taken by exactly one pump
_TAKE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
if #due > 0 then redis.call('ZREM', KEYS[1], unpack(due)) end
return due
"""
#: members `next_due` reads at most (in one call: it holds Redis meanwhile)
NEXT_DUE_SCAN = 10_000
# the score of the first member (in due order) on one of the queues in ARGV[2..], read on the
# server in one call (paging from the client would skip members another worker's pump removed);
# past ARGV[1] members, the score of the last one read: a time to look again
_NEXT_DUE = """
local n = math.min(redis.call('ZCARD', KEYS[1]), tonumber(ARGV[1]))
local wanted = {}
for k = 2, #ARGV do wanted[ARGV[k]] = true end
local last = false
for i = 0, n - 1, 200 do
  local page = redis.call('ZRANGE', KEYS[1], i, math.min(i + 199, n - 1), 'WITHSCORES')
  for j = 1, #page, 2 do
    local queue = string.match(page[j], '^[^|]*|([^|]*)|')
    if queue and wanted[queue] then return page[j + 1] end
    last = page[j + 1]
  end
end
if n == tonumber(ARGV[1]) then return last end
return false
"""


def pump(rt: Runtime) -> int:
    """Push every delayed job that is due (PUMP_MAX at most per call). Each is pushed by exactly
    one worker: the one whose call took it off the set (one script per PUMP_BATCH members, then
    one pipeline per PUSH_BATCH pushes, instead of a ZREM and a push per job). A push that fails
    leaves its row ``queued`` and due: the sweeper pushes it at its next full sweep (within
    ``PROSAAS_SWEEP_INTERVAL``). Returns how many were pushed."""
    take = _script(rt, _TAKE_DUE)
    pushed = 0
    for _ in range(0, PUMP_MAX, PUMP_BATCH):
        # the runtime's client returns bytes (redis-py's types cannot know decode_responses)
        due = cast("list[bytes]", take(keys=[DELAYED_KEY], args=[time.time(), PUMP_BATCH]))
        rows = []
        for member in due:
            job_id, queue, timeout = member.decode().split("|")
            rows.append((int(job_id), queue, float(timeout) if timeout else None))
        done = push_timed(rt, rows)
        pushed += len(done)
        if len(due) < PUMP_BATCH or len(done) < len(rows):
            break  # all taken, or Redis failed: what is left waits for the next pass
    return pushed


def _script(rt: Runtime, source: str) -> Any:
    """Script `source` on the runtime's client, registered once per client."""
    client = rt.redis
    per_client = _scripts.get(client)
    if per_client is None:
        per_client = _scripts.setdefault(client, {})
    if source not in per_client:
        per_client[source] = client.register_script(source)
    return per_client[source]


_scripts: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def next_due(rt: Runtime, queues: list[str]) -> float | None:
    """The earliest due time (epoch seconds) of a delayed job on one of `queues`, or None.
    Behind more than NEXT_DUE_SCAN members of other queues, the due time of the last one read
    (the caller pumps then and asks again)."""
    found = _script(rt, _NEXT_DUE)(keys=[DELAYED_KEY], args=[NEXT_DUE_SCAN, *queues])
    return float(found) if found is not None else None
