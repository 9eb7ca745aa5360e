"""The delayed set (retries with backoff, jobs due later): every due member is pushed exactly
once however many workers pump it at the same time, and nothing before its time."""

from __future__ import annotations

import threading
import time

from prosaas_core.jobs import delayed
from prosaas_core.jobs.delayed import DELAYED_KEY, PUMP_MAX, next_due, pump
from prosaas_core.jobs.transport import rq_job_id


def _members(ids, queue: str, when: float) -> dict[str, float]:
    return {f"{i}|{queue}|": when for i in ids}


def test_two_pumps_at_once_push_each_due_job_exactly_once(runtime, env):
    from prosaas_core.runtime import Runtime
    from prosaas_core.settings import Settings

    r = runtime.redis
    due, later = range(1, 3001), range(5001, 5201)
    r.zadd(DELAYED_KEY, _members(due, "default", time.time() - 1))
    r.zadd(DELAYED_KEY, _members(later, "default", time.time() + 3600))
    others = [Runtime(Settings.from_env(env), pm=runtime.pm) for _ in range(2)]
    counts: list[int] = []
    go = threading.Barrier(len(others))

    def drain(rt) -> None:
        go.wait()
        counts.append(pump(rt))

    threads = [threading.Thread(target=drain, args=(rt,)) for rt in others]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for rt in others:
        rt.close()
    assert sum(counts) == len(due), counts
    listed = r.lrange("rq:queue:default", 0, -1)
    assert sorted(listed) == sorted(rq_job_id(i).encode() for i in due)  # once each
    assert r.hget(f"rq:job:{rq_job_id(1)}", "status") == b"queued"
    assert r.zcard(DELAYED_KEY) == len(later)  # the ones not yet due stay
    assert pump(runtime) == 0


def test_a_burst_of_due_jobs_goes_in_few_pumps(runtime):
    r = runtime.redis
    n = PUMP_MAX + 7
    r.zadd(DELAYED_KEY, _members(range(1, n + 1), "default", time.time() - 1))
    assert pump(runtime) == PUMP_MAX  # at most PUMP_MAX a pass: the sweeper's loop goes on
    assert pump(runtime) == 7
    assert r.llen("rq:queue:default") == n


def test_next_due_finds_a_queue_behind_many_others(runtime):
    r = runtime.redis
    now = time.time()
    r.zadd(DELAYED_KEY, {f"{i}|big|": now + i for i in range(1, 1001)})
    r.zadd(DELAYED_KEY, {"5000|small|": now + 2000})
    assert next_due(runtime, ["small"]) == now + 2000
    assert next_due(runtime, ["big", "small"]) == now + 1
    assert next_due(runtime, ["none"]) is None
    r.delete(DELAYED_KEY)
    assert next_due(runtime, ["small"]) is None


def test_pumps_after_redis_lost_its_scripts(runtime):
    """A restarted Redis knows none of the scripts the pump and the lean pushes were loaded as:
    they are loaded again on the way (the sweeper's re-push after a restart is the same path)."""
    r = runtime.redis
    r.zadd(DELAYED_KEY, _members(range(1, 11), "default", time.time() - 1))
    assert pump(runtime) == 10
    r.delete("rq:queue:default")
    r.script_flush()
    r.zadd(DELAYED_KEY, _members(range(11, 21), "default", time.time() - 1))
    assert pump(runtime) == 10
    assert r.llen("rq:queue:default") == 10
    assert r.hget(f"rq:job:{rq_job_id(20)}", "status") == b"queued"


def test_next_due_reads_a_bounded_part_of_the_set(runtime, monkeypatch):
    """Behind more members of other queues than it reads, it answers the last one's time (to
    pump then and ask again) rather than holding Redis for the whole set."""
    monkeypatch.setattr(delayed, "NEXT_DUE_SCAN", 300)
    r = runtime.redis
    now = time.time()
    r.zadd(DELAYED_KEY, {f"{i}|big|": now + i for i in range(1, 1001)})
    r.zadd(DELAYED_KEY, {"5000|small|": now + 2000})
    assert next_due(runtime, ["small"]) == now + 300
    assert next_due(runtime, ["big"]) == now + 1
