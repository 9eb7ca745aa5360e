"""Per-business flow control: its cost, its fairness and its rate accuracy, in one run.

(a) throughput: N trivial jobs (acme_echo) drained by `prosaas worker --burst`, for a business
    with a generous concurrency override (every job takes and gives back a slot) against the
    same jobs for a business with no limit, interleaved rounds (ABAB...), median of each;
(b) fairness: a big business enqueues B acme_slot jobs (concurrency_per_business=2), then a
    small business enqueues 5; two workers. The small business's p99 wait (enqueue to start) and
    the largest number of jobs of one business seen running at once (from the jobs' own
    records in acme_runs);
(c) rate: R acme_rate jobs (rate_per_business="20/s") for one business, two workers: achieved
    start rate / configured.

    python bench/flow_control.py [--quick] [--jobs N] [--rounds K]

Needs PostgreSQL ($PROSAAS_TEST_PG) and Redis ($BENCH_REDIS_URL, default
redis://127.0.0.1:6379/12; FLUSHDB'd) and the acme test plugin (installed by the Makefile).
Last line: a JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis
from sqlalchemy import create_engine, text

BIN = Path(sys.executable).parent
PG = os.environ.get("PROSAAS_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")


def create_db() -> str:
    name = f"prosaas_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(f"{PG}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return name


def drop_db(name: str) -> None:
    admin = create_engine(f"{PG}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def runtime(env: dict):
    from prosaas_core import migrate
    from prosaas_core.runtime import Runtime
    from prosaas_core.settings import Settings

    rt = Runtime(Settings.from_env(env))
    migrate.upgrade(rt)
    return rt


def business(rt, name: str) -> int:
    from prosaas_core.models import Business

    with rt.session() as s:
        b = Business(name=name)
        s.add(b)
        s.flush()
        return b.id


def workers(env: dict, n: int = 2) -> list[subprocess.Popen]:
    """`n` started `prosaas worker` processes, each past its start-up (so waits measured
    after this are the scheduler's, not Python's start-up)."""
    procs, logs = [], []
    for _ in range(n):
        log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)  # noqa: SIM115
        logs.append(Path(log.name))
        procs.append(
            subprocess.Popen(
                [str(BIN / "prosaas"), "worker"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        )
    end = time.monotonic() + 120
    while not all("WORKER STARTED" in p.read_text() for p in logs):
        if time.monotonic() > end or any(p.poll() is not None for p in procs):
            stop(procs)
            sys.exit("workers did not start:\n" + "\n".join(p.read_text()[-1500:] for p in logs))
        time.sleep(0.1)
    for p in logs:
        p.unlink()
    return procs


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()


def wait_done(rt, job_type: str, n: int, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with rt.engine.connect() as c:
            done = c.execute(
                text("SELECT count(*) FROM background_jobs WHERE job_type = :t AND "
                     "status = 'succeeded'"), {"t": job_type},
            ).scalar_one()  # fmt: skip
        if done >= n:
            return
        time.sleep(0.2)
    sys.exit(f"{job_type}: only {done}/{n} jobs succeeded in {timeout}s")


def drain_round(rt, env: dict, bid: int, n: int) -> float:
    from prosaas_core.jobs.enqueue import enqueue

    with rt.engine.begin() as c:
        c.execute(text("DELETE FROM background_jobs"))
    for i in range(n):
        enqueue(rt, "acme_echo", bid, {"message": f"m{i}"})
    proc = subprocess.run(
        [str(BIN / "prosaas"), "worker", "--burst", "--queues", "default"],
        env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    if proc.returncode != 0:
        sys.exit(f"worker failed:\n{proc.stderr[-2000:]}")
    with rt.engine.connect() as c:
        first, last, done = c.execute(
            text("SELECT min(finished_at), max(finished_at), count(*) FROM background_jobs "
                 "WHERE status = 'succeeded'")
        ).one()  # fmt: skip
    if done != n:
        sys.exit(f"only {done}/{n} jobs succeeded")
    return (n - 1) / max((last - first).total_seconds(), 1e-9)


def bench_throughput(env: dict, n: int, rounds: int) -> dict:
    from prosaas_core.jobs.flow import set_override

    rt = runtime(env)
    free, limited = business(rt, "no limit"), business(rt, "generous limit")
    set_override(rt, limited, "acme_echo", concurrency=100_000, rate=None)
    rates: dict[str, list[float]] = {"unlimited": [], "limited": []}
    for r in range(rounds):
        for side, bid in (("unlimited", free), ("limited", limited)):
            rate = drain_round(rt, env, bid, n)
            rates[side].append(rate)
            print(f"  round {r + 1} {side:>9}: {rate:7.1f} jobs/s", flush=True)
    rt.close()
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {
        "unlimited_per_s": round(med["unlimited"], 1),
        "limited_per_s": round(med["limited"], 1),
        "limited_vs_unlimited": round(med["limited"] / med["unlimited"], 3),
        "spread": {k: [round(x, 1) for x in v] for k, v in rates.items()},
    }


def max_overlap(spans: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    best = cur = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


def bench_fairness(env: dict, big_n: int) -> dict:
    from prosaas_core.jobs.enqueue import enqueue

    rt = runtime(env)
    big, small = business(rt, "big"), business(rt, "small")
    procs = workers(env)
    for _ in range(big_n):
        enqueue(rt, "acme_slot", big, {"seconds": 0.01})
    enqueued_at = {}
    for _ in range(5):
        enqueued_at[enqueue(rt, "acme_slot", small, {"seconds": 0.01}).id] = time.time()
    try:
        wait_done(rt, "acme_slot", big_n + 5, 600)
    finally:
        stop(procs)
    with rt.engine.connect() as c:
        rows = c.execute(
            text("SELECT job_id, business_id, started_at, finished_at FROM acme_runs")
        ).all()
    rt.close()
    waits = sorted((s - enqueued_at[j]) * 1000 for j, _, s, _ in rows if j in enqueued_at)
    per_business = {
        b: max_overlap([(s, e) for _, bb, s, e in rows if bb == b]) for b in (big, small)
    }
    first_small, last_small = (
        min(enqueued_at.values()),
        max(s for j, _, s, _ in rows if j in enqueued_at),
    )
    return {
        "small_tenant_p99_wait_ms": round(waits[min(len(waits) - 1, int(0.99 * len(waits)))], 1),
        "small_tenant_waits_ms": [round(w, 1) for w in waits],
        # the fairness bound: fewer than 50 of the big business's jobs start between
        # the small business's first enqueue and its last start
        "big_jobs_started_while_small_waited": sum(
            1 for _, b, s, _ in rows if b == big and first_small <= s <= last_small
        ),
        "max_concurrency_per_business": max(per_business.values()),
    }


def bench_rate(env: dict, n: int) -> dict:
    from prosaas_core.jobs.enqueue import enqueue

    rt = runtime(env)
    bid = business(rt, "rated")
    procs = workers(env)
    for _ in range(n):
        enqueue(rt, "acme_rate", bid, {})
    try:
        wait_done(rt, "acme_rate", n, 600)
    finally:
        stop(procs)
    with rt.engine.connect() as c:
        starts = sorted(c.execute(text("SELECT started_at FROM acme_runs")).scalars())
    rt.close()
    burst = 2  # parse_rate("20/s").burst: the first starts come back to back by design
    achieved = (len(starts) - 1 - burst) / (starts[-1] - starts[burst])
    worst = max(sum(1 for x in starts[i:] if x < s + 1.0) for i, s in enumerate(starts))
    return {
        "configured_per_s": 20.0,
        "achieved_per_s": round(achieved, 2),
        "rate_accuracy": round(achieved / 20.0, 3),
        "max_window_starts": worst,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller runs, about a minute")
    ap.add_argument("--jobs", type=int, help="jobs per throughput round")
    ap.add_argument("--rounds", type=int, help="throughput rounds per side")
    args = ap.parse_args()
    n = args.jobs or (300 if args.quick else 3000)
    rounds = args.rounds or (2 if args.quick else 3)
    big_n, rate_n = (300, 100) if args.quick else (2000, 300)
    results: dict = {}
    for name, fn in (
        ("throughput", lambda env: bench_throughput(env, n, rounds)),
        ("fairness", lambda env: bench_fairness(env, big_n)),
        ("rate", lambda env: bench_rate(env, rate_n)),
    ):
        db = create_db()
        redis.Redis.from_url(REDIS_URL).flushdb()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PROSAAS_")},
            "DATABASE_URL": f"{PG}/{db}".replace("+psycopg2", ""),
            "REDIS_URL": REDIS_URL,
            "PROSAAS_DISABLE_SERVICES": "acme-ticker,recording-worker",
            "PROSAAS_SHUTDOWN_TIMEOUT": "5",
        }
        os.environ.update({k: v for k, v in env.items() if k.startswith(("DATABASE", "REDIS"))})
        print(f"{name}:", flush=True)
        try:
            results[name] = fn(env)
        finally:
            drop_db(db)
        print("  " + json.dumps(results[name]), flush=True)
    t, f, r = results["throughput"], results["fairness"], results["rate"]
    summary = {
        "jobs_per_round": n,
        "rounds": rounds,
        "unlimited_per_s": t["unlimited_per_s"],
        "limited_per_s": t["limited_per_s"],
        "limited_vs_unlimited": t["limited_vs_unlimited"],
        "big_tenant_jobs": big_n,
        "small_tenant_p99_wait_ms": f["small_tenant_p99_wait_ms"],
        "big_jobs_started_while_small_waited": f["big_jobs_started_while_small_waited"],
        "max_concurrency_per_business": f["max_concurrency_per_business"],
        "concurrency_limit": 2,
        "rate_jobs": rate_n,
        "rate_accuracy": r["rate_accuracy"],
        "max_window_starts": r["max_window_starts"],
    }
    print(
        f"limited/unlimited {summary['limited_vs_unlimited']:.3f}; small tenant p99 wait "
        f"{summary['small_tenant_p99_wait_ms']} ms; max concurrency per business "
        f"{summary['max_concurrency_per_business']}/2; rate accuracy {summary['rate_accuracy']}"
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
