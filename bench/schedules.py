"""Jobs at a time: N `run_at` jobs due in the same second, drained by two workers, against the
same N jobs made available at once without `run_at` (the baseline, same run).

- delayed: two workers run; N acme_echo jobs are enqueued with run_at = T (a second after the
  last enqueue); per job, started_at - T.
- immediate: the two workers are frozen (SIGSTOP), N jobs enqueued without run_at, the workers
  thawed at T (SIGCONT); per job, started_at - T.

Both measure how long N jobs that become runnable at T take to start; `vs_immediate` is the
immediate p99 over the delayed p99 (1.0: due-time jobs cost nothing extra).

    python bench/schedules.py [--quick] [--jobs N]

Needs PostgreSQL ($PROSAAS_TEST_PG) and Redis ($BENCH_REDIS_URL, default
redis://127.0.0.1:6379/11; FLUSHDB'd) and the acme test plugin. Last line: a JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flow_control import business, create_db, drop_db, runtime, stop, workers  # noqa: E402

PG = os.environ.get("PROSAAS_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))]


def starts(rt, n: int, t0: datetime, timeout: float = 900) -> list[float]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with rt.engine.connect() as c:
            done = c.execute(
                text("SELECT count(*) FROM background_jobs WHERE status = 'succeeded'")
            ).scalar_one()
        if done >= n:
            break
        time.sleep(0.5)
    else:
        sys.exit(f"only {done}/{n} jobs finished")
    with rt.engine.connect() as c:
        rows = c.execute(text("SELECT started_at FROM background_jobs")).scalars().all()
    return [(s - t0).total_seconds() * 1000 for s in rows]


def delayed(env: dict, n: int) -> list[float]:
    from prosaas_core.jobs.enqueue import enqueue

    rt = runtime(env)
    bid = business(rt, "b")
    procs = workers(env)
    try:
        lead = 5.0 + n / 80  # time to enqueue them all on a loaded machine, with room
        due = datetime.now(UTC) + timedelta(seconds=lead)
        t = time.monotonic()
        for i in range(n):
            enqueue(rt, "acme_echo", bid, {"message": f"m{i}"}, run_at=due)
        took = time.monotonic() - t
        if datetime.now(UTC) >= due:
            sys.exit(f"enqueueing took {took:.1f}s, past the due time: use fewer --jobs")
        return starts(rt, n, due)
    finally:
        stop(procs)
        rt.close()


def immediate(env: dict, n: int) -> list[float]:
    from prosaas_core.jobs.enqueue import enqueue

    rt = runtime(env)
    bid = business(rt, "b")
    procs = workers(env)
    try:
        for p in procs:
            os.killpg(p.pid, signal.SIGSTOP)
        for i in range(n):
            enqueue(rt, "acme_echo", bid, {"message": f"m{i}"})
        t0 = datetime.now(UTC)
        for p in procs:
            os.killpg(p.pid, signal.SIGCONT)
        return starts(rt, n, t0)
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGCONT)
        stop(procs)
        rt.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1,000 jobs instead of 10,000")
    ap.add_argument("--jobs", type=int)
    args = ap.parse_args()
    n = args.jobs or (1000 if args.quick else 10000)
    out = {}
    for name, fn in (("delayed", delayed), ("immediate", immediate)):
        db = create_db()
        redis.Redis.from_url(REDIS_URL).flushdb()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PROSAAS_")},
            "DATABASE_URL": f"{PG}/{db}".replace("+psycopg2", ""),
            "REDIS_URL": REDIS_URL,
            "PROSAAS_DISABLE_SERVICES": "acme-ticker,recording-worker",
            "PROSAAS_SHUTDOWN_TIMEOUT": "5",
        }
        try:
            ms = fn(env, n)
        finally:
            drop_db(db)
        out[name] = {"p50_ms": round(pct(ms, 0.5), 1), "p99_ms": round(pct(ms, 0.99), 1)}
        print(f"{name:>9}: due-to-start p50 {out[name]['p50_ms']:9.1f} ms   "
              f"p99 {out[name]['p99_ms']:9.1f} ms", flush=True)  # fmt: skip
    summary = {
        "jobs": n,
        "due_to_start_p50_ms": out["delayed"]["p50_ms"],
        "due_to_start_p99_ms": out["delayed"]["p99_ms"],
        "immediate_p50_ms": out["immediate"]["p50_ms"],
        "immediate_p99_ms": out["immediate"]["p99_ms"],
        "vs_immediate": round(out["immediate"]["p99_ms"] / max(out["delayed"]["p99_ms"], 1), 3),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
