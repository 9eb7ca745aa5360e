"""A scaled-down day: mixed job types of the installed plugins for many businesses, flowing
through real `prosaas worker` processes at a steady rate, for 10 minutes (``--quick``: 40 s).

The mix follows the capacity plan's day (docs/capacity.md) scaled down: lead updates and
deletes (the bulk of the plan's per-lead work, a few leads each here), receipts clean-ups, and
the acme test plugin's `acme_echo` as the "one small write" job (a call or recording row).
Reported, as the last line (JSON):

- ``jobs_per_s``: jobs completed / seconds from the first enqueue to the last finish;
- ``p99_wait_ms_by_type``: queue wait (started_at - created_at) per job type, 99th percentile;
- ``rss_mb_start`` / ``rss_mb_end``: the workers' resident memory (sum) at the first and the
  last sample, and ``rss_mb_samples`` every 5 s (a leak shows as growth);
- the per-job costs the capacity plan is derived from: PostgreSQL transactions per job
  (``pg_stat_database`` of the soak's database), Redis commands per job and bytes per queued
  job (``INFO`` of the soak's own redis-server), measured here rather than estimated.

    python bench/soak.py [--quick] [--seconds S] [--rate JOBS_PER_S] [--businesses N]
                         [--workers W]

PostgreSQL: $PROSAAS_TEST_PG (a fresh database, dropped at the end). Redis: a redis-server of
its own on a spare port (nothing on disk), so its counters are the soak's alone.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text

BIN = Path(sys.executable).parent
PG = os.environ.get("PROSAAS_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432")
#: the day's mix (weights), see docs/capacity.md
MIX = {"acme_echo": 6, "update_leads": 2, "delete_leads": 1, "delete_receipts_all": 1}
LEADS_PER_BUSINESS = 20
#: seconds the idle workers' own Redis and PostgreSQL traffic is measured before the day starts
IDLE_SECONDS = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis() -> tuple[subprocess.Popen, int, str]:
    port, d = free_port(), tempfile.mkdtemp(prefix="prosaas-soak-redis-")
    proc = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind",
         "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", d],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    end = time.monotonic() + 15
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, port, d
        except OSError:
            time.sleep(0.05)
    sys.exit("redis-server did not start")


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return round(total / 1024, 1)


def cpu_s(pids: list[int]) -> float:
    """utime + stime of `pids` (and their reaped children), seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in f[11:15])
        except OSError:
            pass
    return total / tick


def pg_backends(engine, db: str) -> list[int]:
    with engine.connect() as c:
        return [
            r[0]
            for r in c.execute(
                text("SELECT pid FROM pg_stat_activity WHERE datname = :d"), {"d": db}
            )
        ]


def p99(values: list[float]) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * 0.99))] if values else 0.0


def seed(rt, n: int) -> list[int]:
    """`n` businesses with LEADS_PER_BUSINESS leads each (one INSERT ... SELECT per table)."""
    with rt.engine.begin() as c:
        ids = [
            r[0]
            for r in c.execute(
                text("INSERT INTO businesses (name) SELECT 'soak ' || g "
                     "FROM generate_series(1, :n) g RETURNING id"), {"n": n},
            )
        ]  # fmt: skip
        c.execute(
            text(
                "INSERT INTO leads (business_id, name, phone) SELECT b, 'lead ' || g, "
                "'+1555' || lpad((b * 100 + g)::text, 7, '0') "
                "FROM unnest(CAST(:ids AS bigint[])) b, generate_series(1, :k) g"
            ),
            {"ids": ids, "k": LEADS_PER_BUSINESS},
        )
    return ids


def payload(rt, job_type: str, business: int, rng: random.Random) -> dict:
    if job_type == "acme_echo":
        return {"message": "call-or-recording"}
    if job_type == "update_leads":
        return {"all": True, "set": {"status": rng.choice(["contacted", "won", "new"])}}
    if job_type == "delete_leads":
        with rt.engine.connect() as c:
            lead = c.execute(
                text("SELECT id FROM leads WHERE business_id = :b ORDER BY id LIMIT 1"),
                {"b": business},
            ).scalar()
        return {"lead_ids": [lead]} if lead else {"all": True}
    return {}


def bytes_per_queued_job(rt, redis_client, n: int = 500) -> tuple[float, float]:
    """Redis memory and PostgreSQL transactions for `n` jobs enqueued with no worker running
    (then deleted): what one waiting job costs."""
    from prosaas_core.jobs.enqueue import enqueue

    with rt.engine.connect() as c:
        b = c.execute(text("SELECT min(id) FROM businesses")).scalar()
    redis_client.execute_command("MEMORY", "PURGE")
    before = redis_client.info("memory")["used_memory"]
    for _ in range(n):
        enqueue(rt, "acme_echo", b, {"message": "call-or-recording"})
    after = redis_client.info("memory")["used_memory"]
    redis_client.flushdb()
    with rt.engine.begin() as c:
        c.execute(text("DELETE FROM background_jobs"))
    return (after - before) / n, 0.0


def pg_xacts(engine, db: str) -> int:
    with engine.connect() as c:
        return c.execute(
            text("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = :d"),
            {"d": db},
        ).scalar_one()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="40 s, 200 businesses")
    ap.add_argument("--seconds", type=float)
    ap.add_argument("--rate", type=float, default=15.0, help="jobs enqueued per second")
    ap.add_argument("--businesses", type=int)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    seconds = args.seconds or (40.0 if args.quick else 600.0)
    n_biz = args.businesses or (200 if args.quick else 2000)

    import redis

    from prosaas_core import migrate
    from prosaas_core.jobs.enqueue import enqueue
    from prosaas_core.plugins import get_plugin_manager
    from prosaas_core.runtime import Runtime
    from prosaas_core.settings import Settings

    db = f"prosaas_soak_{uuid.uuid4().hex[:10]}"
    admin = create_engine(f"{PG}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{db}"'))
    rproc, rport, rdir = start_redis()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROSAAS_")}
    env.update(DATABASE_URL=f"{PG}/{db}", REDIS_URL=f"redis://127.0.0.1:{rport}/0")
    rt = Runtime(Settings.from_env(env), pm=get_plugin_manager(load_entrypoints=True))
    procs: list[subprocess.Popen] = []
    try:
        migrate.upgrade(rt)
        businesses = seed(rt, n_biz)
        r = redis.Redis(port=rport)
        queued_bytes, _ = bytes_per_queued_job(rt, r)

        logdir = Path(tempfile.mkdtemp(prefix="prosaas-soak-"))
        for i in range(args.workers):
            procs.append(
                subprocess.Popen(
                    [str(BIN / "prosaas"), "worker"],
                    env=env,
                    stdout=open(logdir / f"w{i}.log", "w"),
                    stderr=subprocess.STDOUT,  # noqa: SIM115
                    start_new_session=True,
                )  # fmt: skip
            )
        end = time.monotonic() + 120
        while not all(
            "WORKER STARTED" in (logdir / f"w{i}.log").read_text() for i in range(len(procs))
        ):
            if time.monotonic() > end or any(p.poll() is not None for p in procs):
                sys.exit("workers did not start")
            time.sleep(0.1)
        pids = [p.pid for p in procs]

        # what idle workers cost on their own (heartbeats, leases, the waker, the sweeper):
        # the fixed part, so the per-job figures below can have it taken out
        time.sleep(3)
        i_cmds, i_x, i_t = (
            r.info("stats")["total_commands_processed"],
            pg_xacts(admin, db),
            time.monotonic(),
        )
        time.sleep(IDLE_SECONDS)
        idle_s = time.monotonic() - i_t
        idle_cmds = (r.info("stats")["total_commands_processed"] - i_cmds) / idle_s
        idle_xacts = (pg_xacts(admin, db) - i_x) / idle_s
        rng = random.Random(18)
        types = [t for t in MIX for _ in range(MIX[t])]
        cmds0 = r.info("stats")["total_commands_processed"]
        rcpu = r.info("cpu")
        redis_cpu0 = rcpu["used_cpu_user"] + rcpu["used_cpu_sys"]
        worker_cpu0 = cpu_s(pids)
        backends0 = {pid: cpu_s([pid]) for pid in pg_backends(admin, db)}
        xacts0 = pg_xacts(admin, db)
        samples: list[tuple[float, float]] = [(0.0, rss_mb(pids))]
        t0 = time.monotonic()
        sent = 0
        next_sample = t0 + 5
        while (now := time.monotonic()) < t0 + seconds:
            due = int((now - t0) * args.rate)
            while sent < due:
                jt = rng.choice(types)
                b = rng.choice(businesses)
                enqueue(rt, jt, b, payload(rt, jt, b, rng))
                sent += 1
            if now >= next_sample:
                samples.append((round(now - t0, 1), rss_mb(pids)))
                next_sample += 5
            time.sleep(0.01)
        # drain
        drain_end = time.monotonic() + 300
        while time.monotonic() < drain_end:
            with rt.engine.connect() as c:
                left = c.execute(
                    text(
                        "SELECT count(*) FROM background_jobs WHERE status IN ('queued', 'running')"
                    )
                ).scalar_one()
            if not left:
                break
            time.sleep(0.5)
        samples.append((round(time.monotonic() - t0, 1), rss_mb(pids)))
        cmds = r.info("stats")["total_commands_processed"] - cmds0
        rcpu = r.info("cpu")
        redis_cpu = rcpu["used_cpu_user"] + rcpu["used_cpu_sys"] - redis_cpu0
        worker_cpu = cpu_s(pids) - worker_cpu0
        # the workers' pooled backends live through the run: their CPU is the database's share
        # PostgreSQL sessions the workers hold (the producer's own pool taken out)
        ours = rt.engine.pool.checkedin() + rt.engine.pool.checkedout()
        pg_sessions = len(pg_backends(admin, db)) - ours  # admin sessions are on "postgres"
        pg_cpu = sum(cpu_s([pid]) - backends0.get(pid, 0.0) for pid in pg_backends(admin, db))
        xacts = pg_xacts(admin, db) - xacts0
        with rt.engine.connect() as c:
            rows = c.execute(
                text(
                    "SELECT job_type, status, extract(epoch FROM started_at - created_at) * 1000, "
                    "extract(epoch FROM created_at), extract(epoch FROM finished_at) "
                    "FROM background_jobs"
                )
            ).all()
        done = [row for row in rows if row[1] == "succeeded"]
        waits: dict[str, list[float]] = {}
        for jt, _, wait, _, _ in done:
            waits.setdefault(jt, []).append(float(wait))
        span = max(float(row[4]) for row in done) - min(float(row[3]) for row in done)
        summary = {
            "bench": "soak",
            "quick": args.quick,
            "seconds": seconds,
            "businesses": n_biz,
            "workers": args.workers,
            "rate_offered": args.rate,
            "enqueue_calls": sent,  # update_leads is unique per business: some calls dedupe
            "jobs": len(rows),
            "succeeded": len(done),
            "not_succeeded": len(rows) - len(done),
            "jobs_per_s": round(len(done) / span, 2) if span > 0 else 0.0,
            "p99_wait_ms_by_type": {t: round(p99(v), 1) for t, v in sorted(waits.items())},
            "p50_wait_ms_by_type": {
                t: round(sorted(v)[len(v) // 2], 1) for t, v in sorted(waits.items())
            },
            "rss_mb_start": samples[0][1],
            "rss_mb_end": samples[-1][1],
            "rss_mb_samples": samples,
            "redis_commands_per_job": round(cmds / max(len(done), 1), 1),
            "idle_redis_commands_per_s_per_worker": round(idle_cmds / args.workers, 1),
            "idle_pg_transactions_per_s_per_worker": round(idle_xacts / args.workers, 2),
            # the per-job share once the idle workers' own traffic over the run is taken out
            "redis_commands_per_job_net": round((cmds - idle_cmds * span) / max(len(done), 1), 1),
            "pg_transactions_per_job_net": round(
                (xacts - idle_xacts * span) / max(len(done), 1), 2
            ),
            "redis_bytes_per_queued_job": round(queued_bytes),
            "pg_transactions_per_job": round(xacts / max(len(done), 1), 1),
            "pg_sessions_per_worker": round(pg_sessions / args.workers, 1),
            "worker_cpu_ms_per_job": round(worker_cpu * 1000 / max(len(done), 1), 2),
            "redis_cpu_ms_per_job": round(redis_cpu * 1000 / max(len(done), 1), 3),
            "pg_backend_cpu_ms_per_job": round(pg_cpu * 1000 / max(len(done), 1), 2),
            "note": "2 shared cores, other engineers' tests running: absolute figures are loaded",
        }
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(40)
            except subprocess.TimeoutExpired:
                p.kill()
        rt.close()
        rproc.kill()
        shutil.rmtree(rdir, ignore_errors=True)
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        admin.dispose()
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
