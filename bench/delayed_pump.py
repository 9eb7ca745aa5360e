"""Delayed pushes: how fast due retries (and jobs due later) move from the delayed set to their
queue, against RQ's own scheduler moving the same number of due jobs in the same run.

N members are made due at once (a burst of retries after a provider outage, or a schedule firing
for many businesses), then moved until none is left:

- ``prosaas``: `prosaas_core.jobs.delayed.pump` (a script takes up to 500 due members off the set,
  a pipeline pushes them; called until it returns 0);
- ``per_job``: what the pump did before 2026-12-02, in this file: a ZREM and one lean push
  (`transport.push`) per due member;
- ``rq``: RQ's scheduler (``RQScheduler.enqueue_scheduled_jobs``, jobs made with
  ``Queue.enqueue_at`` a second in the past), called until its registry is empty.

Only the move is timed (the set and the registry are filled before the clock starts). The sides
take turns, ``--rounds`` times (3; 2 with ``--quick``), each on a flushed Redis; figures are
medians with every round's value. ``vs_rq`` is prosaas moves/s over RQ's, ``vs_per_job`` over
the old pump's. Needs Redis ($BENCH_REDIS_URL, default redis://127.0.0.1:6379/6; FLUSHDB'd); no
database is touched. Last line: a JSON object.

    python bench/delayed_pump.py [--quick] [--jobs N] [--rounds R]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import redis
from rq import Queue
from rq.scheduler import RQScheduler

from prosaas_core.jobs.delayed import DELAYED_KEY, pump
from prosaas_core.jobs.transport import push
from prosaas_core.plugins import get_plugin_manager
from prosaas_core.runtime import Runtime
from prosaas_core.settings import Settings

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/6")
QUEUE = "default"


def _fill(r: redis.Redis, n: int) -> None:
    due = time.time() - 1
    with r.pipeline(transaction=False) as p:
        for i in range(1, n + 1):
            p.zadd(DELAYED_KEY, {f"{i}|{QUEUE}|": due})
        p.execute()


def run_prosaas(rt: Runtime, n: int) -> float:
    _fill(rt.redis, n)
    t = time.perf_counter()
    moved = 0
    while got := pump(rt):
        moved += got
    took = time.perf_counter() - t
    assert moved == n and rt.redis.llen(f"rq:queue:{QUEUE}") == n, moved
    return n / took


def run_per_job(rt: Runtime, n: int) -> float:
    _fill(rt.redis, n)
    r = rt.redis
    t = time.perf_counter()
    moved = 0
    while True:
        due = cast("list[bytes]", r.zrangebyscore(DELAYED_KEY, "-inf", time.time(), 0, 500))
        if not due:
            break
        for member in due:
            if r.zrem(DELAYED_KEY, member) != 1:
                continue
            job_id, queue, timeout = member.decode().split("|")
            push(rt, int(job_id), queue, timeout=float(timeout) if timeout else None)
            moved += 1
    took = time.perf_counter() - t
    assert moved == n and r.llen(f"rq:queue:{QUEUE}") == n, moved
    return n / took


def run_rq(r: redis.Redis, n: int) -> float:
    q = Queue(QUEUE, connection=r)
    when = datetime.now(UTC) - timedelta(seconds=1)
    with r.pipeline() as p:
        for i in range(n):
            q.enqueue_at(when, "prosaas_core.jobs.dispatch.run_job", i, pipeline=p)
        p.execute()
    scheduler = RQScheduler([q], connection=r, logging_level="WARNING")
    scheduler.acquire_locks()
    registry = q.scheduled_job_registry
    assert registry.count == n, registry.count
    t = time.perf_counter()
    while registry.count:
        scheduler.enqueue_scheduled_jobs()
    took = time.perf_counter() - t
    scheduler.release_locks()
    assert q.count == n, q.count
    return n / took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--jobs", type=int)
    ap.add_argument("--rounds", type=int)
    a = ap.parse_args()
    n = a.jobs or (5_000 if a.quick else 20_000)
    rounds = a.rounds or (2 if a.quick else 3)
    r = redis.Redis.from_url(REDIS_URL)
    db = os.path.join(tempfile.mkdtemp(), "unused.db")  # the pump never opens it
    rt = Runtime(
        Settings.from_env({"DATABASE_URL": f"sqlite:///{db}", "REDIS_URL": REDIS_URL}),
        pm=get_plugin_manager(load_entrypoints=True),
    )
    sides: dict[str, Any] = {
        "rq": lambda: run_rq(r, n),
        "per_job": lambda: run_per_job(rt, n),
        "prosaas": lambda: run_prosaas(rt, n),
    }
    runs: dict[str, list[float]] = {k: [] for k in sides}
    for i in range(rounds):
        for name, side in sides.items():
            r.flushdb()
            runs[name].append(side())
            print(f"round {i + 1} {name:8s} {runs[name][-1]:10,.0f} moves/s", flush=True)
    r.flushdb()
    med = {k: statistics.median(v) for k, v in runs.items()}
    out = {
        "bench": "delayed_pump",
        "jobs": n,
        "rounds": rounds,
        "prosaas_per_s": round(med["prosaas"], 1),
        "per_job_per_s": round(med["per_job"], 1),
        "rq_scheduler_per_s": round(med["rq"], 1),
        "vs_rq": round(med["prosaas"] / med["rq"], 3),
        "vs_per_job": round(med["prosaas"] / med["per_job"], 3),
        "runs": {k: [round(x, 1) for x in v] for k, v in runs.items()},
    }
    print(
        f"prosaas {med['prosaas']:,.0f}/s, old per-job pump {med['per_job']:,.0f}/s, "
        f"RQ scheduler {med['rq']:,.0f}/s: vs_rq {out['vs_rq']}, vs_per_job {out['vs_per_job']}"
    )
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
