"""Worker throughput: prosaas vs plain RQ, same trivial function, same RQ worker class.

N trivial jobs (acme_echo) are enqueued and drained by `prosaas worker --burst`; the baseline is
plain RQ (`rq worker --burst`) running the same function plus one status UPDATE per job on a
kept autocommit psycopg2 cursor, as prosaas writes its own (bench/_rq_baseline.py). Both
workers run as subprocesses with their database round trips counted at the driver (every
statement, implicit BEGIN, COMMIT and ROLLBACK; bench/_dbcount.py).
Drain rate = jobs / (last finish - first finish), so process start-up is not counted for either.

    python bench/worker_throughput.py [--quick] [--jobs N] [--rounds R] [--classes simple,fork]

The two sides are interleaved, ABAB (RQ, prosaas, RQ, prosaas, ...), ``--rounds`` times
(default 3; 2 with ``--quick``, to stay near a minute), each run in a fresh database; the figures
are the medians, with the spread ((max - min) / median) and every round's value in the JSON.

Needs PostgreSQL ($PROSAAS_TEST_PG, default postgresql+psycopg2://postgres@127.0.0.1:5432) and
Redis ($BENCH_REDIS_URL, default redis://127.0.0.1:6379/15; FLUSHDB'd). Plugin services are
disabled in the measured worker: the benchmark is about jobs. Last line: a JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis
from sqlalchemy import create_engine, text

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
PG = os.environ.get("PROSAAS_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
RQ_CLASSES = {"simple": "rq.worker.SimpleWorker", "fork": "rq.worker.Worker"}
COUNTED = (
    "import sys; sys.path.insert(0, {here!r}); import _dbcount; _dbcount.install({path!r}); "
    "sys.argv = {argv!r}; {main}"
)


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


def run_counted(argv: list[str], main: str, env: dict) -> tuple[float, dict]:
    """Run a worker under the round-trip counter; returns (wall seconds, counts)."""
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    code = COUNTED.format(here=str(HERE), path=path, argv=argv, main=main)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=1800
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"worker failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    counts = json.loads(Path(path).read_text())
    os.unlink(path)
    for child in Path(path).parent.glob(Path(path).name + ".*"):  # forked work horses
        if child.suffix == ".tmp":  # a dump cut short at exit (the renamed one is complete)
            child.unlink()
            continue
        for key, value in json.loads(child.read_text()).items():
            counts[key] = counts.get(key, 0) + value
        child.unlink()
    return wall, counts


def drain_rate(conn, table: str, n: int) -> float:
    first, last, done = conn.execute(
        text(f"SELECT min(finished_at), max(finished_at), count(*) FROM {table} "
             "WHERE status = 'succeeded'")
    ).one()  # fmt: skip
    if done != n:
        sys.exit(f"{table}: only {done}/{n} jobs succeeded")
    return (n - 1) / max((last - first).total_seconds(), 1e-9)


def bench_prosaas(env: dict, n: int, kind: str) -> dict:
    from prosaas_core import migrate
    from prosaas_core.jobs.enqueue import enqueue
    from prosaas_core.models import Business
    from prosaas_core.runtime import Runtime
    from prosaas_core.settings import Settings

    rt = Runtime(Settings.from_env(env))
    migrate.upgrade(rt)
    with rt.session() as s:
        b = Business(name="bench")
        s.add(b)
        s.flush()
        bid = b.id
    t0 = time.perf_counter()
    for i in range(n):
        enqueue(rt, "acme_echo", bid, {"message": f"m{i}"})
    enqueue_rate = n / (time.perf_counter() - t0)
    wenv = {**env, "PROSAAS_WORKER_CLASS": kind}
    main = "from prosaas_core.cli.main import main; main()"
    wall, counts = run_counted(["prosaas", "worker", "--burst", "--queues", "default"], main, wenv)
    with rt.engine.connect() as conn:
        rate = drain_rate(conn, "background_jobs", n)
    rt.close()
    return {"enqueue": enqueue_rate, "drain": rate, "wall": wall, "counts": counts}


def bench_rq(env: dict, n: int, kind: str) -> dict:
    from rq import Queue

    engine = create_engine(
        env["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg2://", 1)
    )
    with engine.begin() as c:
        c.execute(
            text(
                "CREATE TABLE bench_rq_jobs (id bigserial PRIMARY KEY, status varchar(16) NOT NULL,"
                " payload jsonb, finished_at timestamptz)"
            )
        )
    r = redis.Redis.from_url(REDIS_URL)
    q = Queue("bench", connection=r)
    conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    t0 = time.perf_counter()
    for i in range(n):
        row_id = conn.execute(
            text("INSERT INTO bench_rq_jobs (status, payload) VALUES ('queued', :p) RETURNING id"),
            {"p": json.dumps({"message": f"m{i}"})},
        ).scalar_one()
        q.enqueue_call("_rq_baseline.run", args=(row_id, f"m{i}"), job_id=f"bench-{row_id}",
                       result_ttl=300, failure_ttl=86400)  # fmt: skip
    enqueue_rate = n / (time.perf_counter() - t0)
    wenv = {**env, "PYTHONPATH": str(HERE)}
    argv = ["rq", "worker", "--burst", "-w", RQ_CLASSES[kind], "--url", REDIS_URL, "bench"]
    main = "import _rq_baseline; from rq.cli.cli import main; main()"  # preloaded, as prosaas
    wall, counts = run_counted(argv, main, wenv)
    rate = drain_rate(conn, "bench_rq_jobs", n)
    conn.close()
    engine.dispose()
    return {"enqueue": enqueue_rate, "drain": rate, "wall": wall, "counts": counts}


def spread(values: list[float]) -> float:
    """(max - min) / median: how far apart the rounds were, as a fraction."""
    med = statistics.median(values)
    return (max(values) - min(values)) / med if med else 0.0


def run_one(system: str, n: int, kind: str) -> dict:
    """One run of one side, in a fresh database and a flushed Redis db."""
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
        fn = bench_prosaas if system == "prosaas" else bench_rq
        return fn(env, n, kind)
    finally:
        drop_db(db)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="200 jobs instead of 5,000")
    ap.add_argument("--jobs", type=int)
    ap.add_argument("--rounds", type=int, help="ABAB rounds (default 3; 2 with --quick)")
    ap.add_argument("--classes", default="simple", help="RQ worker classes: simple,fork")
    args = ap.parse_args()
    n = args.jobs or (200 if args.quick else 5000)
    args.rounds = args.rounds or (2 if args.quick else 3)
    if args.rounds < 1:
        sys.exit("--rounds must be at least 1")
    kinds = [k.strip() for k in args.classes.split(",") if k.strip()]
    load_before = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"worker_throughput: {n} jobs, {args.rounds} ABAB round(s) (RQ, prosaas, RQ, ...), "
          f"load average {load_before}")  # fmt: skip
    runs: dict[str, list[dict]] = {}
    for kind in kinds:
        for r in range(args.rounds):
            for system in ("rq", "prosaas"):
                res = run_one(system, n, kind)
                runs.setdefault(f"{system}/{kind}", []).append(res)
                rt = res["counts"]["round_trips"] / n
                print(
                    f"  round {r + 1} {system:>8} [{kind:>6}] enqueue {res['enqueue']:8.0f} jobs/s"
                    f"   drain {res['drain']:8.0f} jobs/s   db round trips/job {rt:5.2f}   "
                    f"(worker wall {res['wall']:.1f}s, connects {res['counts']['connects']})",
                    flush=True,
                )

    def med(key: str, field: str) -> float:
        return statistics.median(x[field] for x in runs[key])

    def trips(key: str) -> float:
        return statistics.median(x["counts"]["round_trips"] / n for x in runs[key])

    def ratios(kind: str) -> list[float]:  # per round: each pair ran back to back
        pairs = zip(runs[f"prosaas/{kind}"], runs[f"rq/{kind}"], strict=True)
        return [p["drain"] / b["drain"] for p, b in pairs]

    for kind in kinds:
        p, b = f"prosaas/{kind}", f"rq/{kind}"
        rs = ratios(kind)
        print(f"[{kind}] median drain: prosaas {med(p, 'drain'):.0f} jobs/s (spread "
              f"{spread([x['drain'] for x in runs[p]]):.0%}), RQ {med(b, 'drain'):.0f} jobs/s "
              f"(spread {spread([x['drain'] for x in runs[b]]):.0%}); prosaas/RQ drain ratio "
              f"{med(p, 'drain') / med(b, 'drain'):.2f} (per round {min(rs):.2f}..{max(rs):.2f}), "
              f"enqueue ratio {med(p, 'enqueue') / med(b, 'enqueue'):.2f}")  # fmt: skip
    chosen = kinds[0]
    p, b = f"prosaas/{chosen}", f"rq/{chosen}"
    summary: dict[str, object] = {
        "jobs": n,
        "rounds": args.rounds,
        "worker_class": chosen,
        "prosaas_enqueue_per_s": round(med(p, "enqueue"), 1),
        "rq_enqueue_per_s": round(med(b, "enqueue"), 1),
        "prosaas_drain_per_s": round(med(p, "drain"), 1),
        "rq_drain_per_s": round(med(b, "drain"), 1),
        "drain_vs_rq": round(med(p, "drain") / med(b, "drain"), 3),
        "prosaas_drain_spread": round(spread([x["drain"] for x in runs[p]]), 3),
        "rq_drain_spread": round(spread([x["drain"] for x in runs[b]]), 3),
        "prosaas_drain_rounds": [round(x["drain"], 1) for x in runs[p]],
        "rq_drain_rounds": [round(x["drain"], 1) for x in runs[b]],
        "drain_vs_rq_rounds": [round(x, 3) for x in ratios(chosen)],
        "db_round_trips_per_job": round(trips(p), 3),
        "rq_db_round_trips_per_job": round(trips(b), 3),
    }
    for kind in kinds[1:]:
        pk, bk = f"prosaas/{kind}", f"rq/{kind}"
        summary[f"{kind}_prosaas_drain_per_s"] = round(med(pk, "drain"), 1)
        summary[f"{kind}_rq_drain_per_s"] = round(med(bk, "drain"), 1)
        summary[f"{kind}_drain_vs_rq"] = round(med(pk, "drain") / med(bk, "drain"), 3)
    summary["loadavg_before"] = load_before
    summary["loadavg"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
