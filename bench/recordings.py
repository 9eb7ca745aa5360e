"""Recording downloads: throughput against the limit the per-business slots allow.

300 recordings over 6 businesses (``--quick``: 120), served by a local HTTP server standing in
for Twilio that takes 100 ms per file, downloaded by real ``prosaas worker`` processes (2 by
default) with 3 slots per business. The slots allow at most 6 x 3 = 18 downloads at once, so
the limit is 18 / 0.1 s = 180 downloads/s; the baseline in the same run is one sequential
downloader (what a single consumer thread would do: about 1 / latency).

Reports downloads/s (first request to last byte at the server), its ratio to the limit and the
highest concurrency per business the server saw. Target: >= 0.95 x the limit, never above the
slot limit. prosaas runs at its DEFAULT settings (poll interval, download threads per worker,
leases...) unless a flag sets one (``--threads``, ``--poll-interval``); every setting in effect,
as the plugin reads it, is in the JSON under ``settings``. The last line is JSON; the exit code is
non-zero only when a download was lost or the slot limit was broken (``ok``), not when the target
is missed (``meets_target``).

Needs PostgreSQL ($PROSAAS_TEST_PG, default postgresql+psycopg2://postgres@127.0.0.1:5432) and
Redis ($RECORDINGS_BENCH_REDIS_URL, default redis://127.0.0.1:6379/13).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis
import requests
from prosaas_recordings import store
from prosaas_recordings.tables import calls, recording_tasks
from prosaas_recordings.testing import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, StubTwilio
from sqlalchemy import create_engine, func, insert, select, text

from prosaas_core import Runtime, Settings
from prosaas_core.testing import PROSAAS, WorkerProcess
from prosaas_core.testing import wait_until as wait_for

PG = os.environ.get("PROSAAS_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("RECORDINGS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")


def create_db() -> str:
    name = f"prosaas_bench_rec_{uuid.uuid4().hex[:8]}"
    admin = create_engine(f"{PG}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return f"{PG}/{name}"


def drop_db(url: str) -> None:
    admin = create_engine(f"{PG}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
    admin.dispose()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sequential_baseline(stub: StubTwilio, n: int) -> float:
    """Downloads/s of one thread fetching one file after another."""
    http = requests.Session()
    started = time.monotonic()
    for i in range(n):
        resp = http.get(
            stub.url(0, f"REbase{i}") + ".mp3", auth=(TEST_ACCOUNT_SID, TEST_AUTH_TOKEN)
        )
        resp.raise_for_status()
    return n / (time.monotonic() - started)


def transport_ceiling(stub: StubTwilio, n: int, concurrency: int) -> float:
    """Downloads/s of `concurrency` bare threads (no database, Redis or files): what this
    machine's HTTP stack and the stub sustain right now, the practical ceiling."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    local = threading.local()

    def get(i: int) -> None:
        http = getattr(local, "http", None) or requests.Session()
        local.http = http
        resp = http.get(
            stub.url(0, f"REceil{i}") + ".mp3", auth=(TEST_ACCOUNT_SID, TEST_AUTH_TOKEN)
        )
        resp.raise_for_status()

    started = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(get, range(n)))
    return n / (time.monotonic() - started)


def seed(rt: Runtime, stub: StubTwilio, n: int, businesses: int) -> list[int]:
    """Businesses, calls and n queued download tasks, round-robin over the businesses."""
    from prosaas_core.models import Business

    with rt.session() as s:
        ids = []
        for b in range(businesses):
            s.add(biz := Business(name=f"bench {b}"))
            s.flush()
            ids.append(biz.id)
        for i in range(n):
            biz = ids[i % businesses]
            call, rec = f"CA{i:032x}", f"RE{i:032x}"
            s.execute(insert(calls).values(business_id=biz, call_sid=call))
            store.create_task(
                s,
                business_id=biz,
                call_sid=call,
                recording_sid=rec,
                recording_url=stub.url(biz, rec),
                duration=30,
            )
    return ids


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="120 recordings")
    ap.add_argument("--recordings", type=int, default=None)
    ap.add_argument("--businesses", type=int, default=6)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--slots", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="download threads per worker (default: the plugin's, 16)",
    )
    ap.add_argument(
        "--poll-interval",
        type=float,
        default=None,
        help="seconds between the recording worker's polls (default: 1.0)",
    )
    args = ap.parse_args()
    n = args.recordings or (120 if args.quick else 300)
    limit = args.businesses * args.slots / args.latency

    r = redis.Redis.from_url(REDIS_URL)
    for key in r.scan_iter("prosaas:recordings:slots:*"):
        r.delete(key)
    db = create_db()
    tmp = Path(tempfile.mkdtemp(prefix="prosaas-bench-rec-"))
    stub = StubTwilio(size=16 * 1024, latency=args.latency).start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROSAAS_")}
    env.update(
        DATABASE_URL=db,
        REDIS_URL=REDIS_URL,
        PYTHONUNBUFFERED="1",
        TWILIO_ACCOUNT_SID=TEST_ACCOUNT_SID,
        TWILIO_AUTH_TOKEN=TEST_AUTH_TOKEN,
        RECORDINGS_DIR=str(tmp / "recordings"),
        RECORDINGS_ALLOWED_HOSTS=stub.host,
        RECORDINGS_ALLOW_HTTP="1",
        RECORDINGS_SLOTS_PER_BUSINESS=str(args.slots),
        PROSAAS_DISABLE_SERVICES="acme-ticker",
    )
    # the plugin's defaults unless a flag says otherwise (bench/ used to run 0.05 s and 16)
    if args.threads is not None:
        env["RECORDINGS_WORKER_THREADS"] = str(args.threads)
    if args.poll_interval is not None:
        env["RECORDINGS_POLL_INTERVAL"] = str(args.poll_interval)
    from prosaas_recordings.config import RecordingsConfig

    cfg = RecordingsConfig.from_settings(Settings.from_env(env))
    settings_used = {
        "worker_threads": cfg.worker_threads,
        "poll_interval_s": cfg.poll_interval,
        "slots_per_business": cfg.slots_per_business,
        "lease_s": cfg.lease_seconds,
        "max_attempts": cfg.max_attempts,
        "connect_timeout_s": cfg.connect_timeout,
        "read_timeout_s": cfg.read_timeout,
        "workers": args.workers,
        "defaults": args.threads is None and args.poll_interval is None,
        "env": {
            k: v
            for k, v in env.items()
            if k.startswith("RECORDINGS_") and k != "RECORDINGS_DIR" and "BENCH" not in k
        },
    }
    workers: list[WorkerProcess] = []
    rt = Runtime(Settings.from_env(env))
    try:
        import subprocess

        subprocess.run([PROSAAS, "db", "upgrade"], env=env, check=True, capture_output=True)
        baseline = sequential_baseline(stub, 20)
        print(f"sequential baseline (1 thread, {args.latency * 1000:.0f} ms/file): "
              f"{baseline:.1f} downloads/s")  # fmt: skip
        ceiling = transport_ceiling(stub, n, args.businesses * args.slots)
        print(f"transport ceiling ({args.businesses * args.slots} bare threads, no DB/Redis/files):"
              f" {ceiling:.1f} downloads/s = {ceiling / limit:.2f}x the limit")  # fmt: skip
        workers = [WorkerProcess(env) for _ in range(args.workers)]
        for w in workers:
            w.wait_for_line("Recording worker loop started", timeout=60)
        cpu_idle = sum(_cpu_seconds(w.proc.pid) for w in workers)  # start-up, excluded below
        seed(rt, stub, n, args.businesses)

        def done() -> bool:
            with rt.session() as s:
                left = s.execute(
                    select(func.count())
                    .select_from(recording_tasks)
                    .where(recording_tasks.c.status != "done")
                ).scalar_one()
            return left == 0

        def all_served() -> bool:
            return sum(v for sid, v in list(stub.served.items()) if sid.startswith("RE0")) >= n

        # Watch the stub (in memory) while downloads run, so the bench's own database polling
        # does not compete with the stub for this process's CPU; then wait for the bookkeeping.
        wait_for(all_served, timeout=120, step=0.05)
        wait_for(done, timeout=120, step=0.05)
        cpu = sum(_cpu_seconds(w.proc.pid) for w in workers) - cpu_idle
        first = min(
            t[0]
            for sid, t in stub.request_times.items()
            if t and not sid.startswith(("REbase", "REceil"))
        )
        last = stub.last_served
        rate = n / (last - first)
        served = sum(v for sid, v in stub.served.items() if sid.startswith("RE0"))
        max_conc = max(stub.max_active[b] for b in stub.max_active if b != 0)
        origin = "defaults" if settings_used["defaults"] else "set by flags"
        print(f"{n} recordings, {args.businesses} businesses, {args.slots} slots each, "
              f"{args.workers} workers x {cfg.worker_threads} threads, poll interval "
              f"{cfg.poll_interval:g} s ({origin})")  # fmt: skip
        print(f"downloads: {rate:.1f}/s; limit (concurrency / latency): {limit:.0f}/s; "
              f"vs limit: {rate / limit:.2f}x; vs ceiling: {rate / ceiling:.2f}x; "
              f"vs sequential: {rate / baseline:.1f}x")  # fmt: skip
        print(f"worker CPU: {cpu:.2f} s in total, {cpu / n * 1000:.1f} ms per download "
              f"(start-up excluded)")  # fmt: skip
        print(f"max concurrency per business seen by the server: {max_conc} "
              f"(slot limit {args.slots}); requests served: {served}")  # fmt: skip
        result = {
            "recordings": n,
            "businesses": args.businesses,
            "latency_s": args.latency,
            "slots_per_business": args.slots,
            "workers": args.workers,
            "downloads_per_s": round(rate, 1),
            "limit_per_s": round(limit, 1),
            # what the download threads alone allow: below the slot limit, the threads cap it
            "thread_cap_per_s": round(args.workers * cfg.worker_threads / args.latency, 1),
            "vs_limit": round(rate / limit, 3),
            "sequential_baseline_per_s": round(baseline, 1),
            "transport_ceiling_per_s": round(ceiling, 1),
            "vs_ceiling": round(rate / ceiling, 3),
            "max_concurrency_per_business": max_conc,
            "served": served,
            "worker_cpu_ms_per_download": round(cpu / n * 1000, 1),
            "target": 0.95,
            "meets_target": rate / limit >= 0.95,
            "ok": max_conc <= args.slots and served == n,
            "settings": settings_used,
            "loadavg": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        }
    finally:
        for w in workers:  # stop them all before anything else can fail
            try:
                w.stop()
            except Exception:
                w.kill()
        if os.environ.get("BENCH_LOG_DIR"):
            Path(os.environ["BENCH_LOG_DIR"]).mkdir(parents=True, exist_ok=True)
            for i, w in enumerate(workers):
                Path(os.environ["BENCH_LOG_DIR"], f"worker{i}.log").write_text(w.output)
        stub.stop()
        rt.close()
        drop_db(db)
    print(json.dumps(result))
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
