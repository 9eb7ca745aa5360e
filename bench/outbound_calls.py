"""Outbound call campaigns: calls/s against the limit the live-call slots and the call rate
allow, and the most live calls per business the provider saw.

2,000 targets (``--quick``: 400) over 4 businesses, one campaign each with ``max_concurrent``
10 and a call rate above what the slots allow, dialed by real ``prosaas worker`` processes
through the Twilio SDK to a local Twilio stand-in that ends each call after 200 ms and sends
its signed status callbacks to a real ``prosaas serve``. The slots allow 4 x 10 calls at once,
so the limit is 4 x 10 / 0.2 s = 200 calls/s (or the call rate, if lower).

Baseline in the same run: the transport ceiling, 40 bare threads each placing a call through
the SDK and holding its line for 200 ms, with no database, Redis or callbacks.

Reports calls/s (first call created to last call ended, at the server), ``vs_limit`` (target
>= 0.9) and ``max_live_per_business`` (must not exceed 10). The last line is JSON.

Needs PostgreSQL ($PROSAAS_TEST_PG, default postgresql+psycopg2://postgres@127.0.0.1:5432) and
Redis ($OUTBOUND_BENCH_REDIS_URL, default redis://127.0.0.1:6379/14, flushed).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import redis
import requests
from prosaas_outbound_calls.testing import (
    TEST_ACCOUNT_SID,
    TEST_AUTH_TOKEN,
    FakeTwilio,
)
from sqlalchemy import create_engine, text

from prosaas_core import Runtime, Settings
from prosaas_core.testing import ServeProcess, bearer, business_with_token, wait_until

PG = os.environ.get("PROSAAS_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("OUTBOUND_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
PROSAAS = str(Path(sys.executable).with_name("prosaas"))


def create_db() -> str:
    name = f"prosaas_bench_out_{uuid.uuid4().hex[:8]}"
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its waited-for children (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def tree(pid: int) -> list[int]:
    """`pid` and its children (gunicorn's workers)."""
    out = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        children = (task / "children").read_text().split() if (task / "children").exists() else []
        for child in children:
            out += tree(int(child))
    return out


def transport_ceiling(fake: FakeTwilio, lines: int, duration: float, n: int) -> float:
    """Calls/s of `lines` bare threads: SDK create, then hold the line for `duration`."""
    from twilio.rest import Client

    left = [n]
    lock = threading.Lock()

    def line() -> None:
        client = Client(TEST_ACCOUNT_SID, TEST_AUTH_TOKEN)
        client.api.base_url = fake.url
        while True:
            with lock:
                if left[0] <= 0:
                    return
                left[0] -= 1
            client.calls.create(to="+15005550006", from_="+15005550000", url="https://x.test/")
            time.sleep(duration)

    started = time.monotonic()
    threads = [threading.Thread(target=line) for _ in range(lines)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return n / (time.monotonic() - started)


class Worker:
    """A `prosaas worker` whose output goes to a file."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out = open(log, "w")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [PROSAAS, "worker"], env=env, stdout=self._out, stderr=subprocess.STDOUT
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()


def seed(rt: Runtime, businesses: int, per_business: int) -> list[tuple[int, str, str]]:
    """Businesses with a token, a caller id and their leads."""
    out = []
    for b in range(businesses):
        business_id, token = business_with_token(rt, f"Bench {b}")
        caller = f"+1212555{b:04d}"
        with rt.session() as s:
            s.execute(
                text("INSERT INTO outbound_caller_ids (business_id, phone) VALUES (:b, :p)"),
                {"b": business_id, "p": caller},
            )
            s.execute(
                text(
                    "INSERT INTO leads (business_id, phone) SELECT :b, '+1' || (:area)::text"
                    " || lpad(g::text, 7, '0') FROM generate_series(2000000, :hi) g"
                ),
                {"b": business_id, "area": 312 + b, "hi": 2000000 + per_business - 1},
            )
        out.append((business_id, token, caller))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="400 targets")
    ap.add_argument("--targets", type=int, default=None)
    ap.add_argument("--businesses", type=int, default=4)
    ap.add_argument("--slots", type=int, default=10, help="max_concurrent per business")
    ap.add_argument("--cps", type=float, default=100.0, help="calls_per_second per business")
    ap.add_argument("--duration", type=float, default=0.2, help="seconds per call")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--web-workers", type=int, default=2)
    ap.add_argument("--dial-threads", type=int, default=8)
    ap.add_argument(
        "--events",
        default="initiated,ringing,answered,completed",
        help="OUTBOUND_CALLS_STATUS_EVENTS (the progress callbacks asked for)",
    )
    args = ap.parse_args()
    n = args.targets or (400 if args.quick else 2000)
    per_business = n // args.businesses
    n = per_business * args.businesses
    limit = args.businesses * min(args.cps, args.slots / args.duration)

    redis.Redis.from_url(REDIS_URL).flushdb()
    db = create_db()
    tmp = Path(tempfile.mkdtemp(prefix="prosaas-bench-out-"))
    fake = FakeTwilio(min_duration=args.duration, max_duration=args.duration).start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROSAAS_", "OUTBOUND_"))}
    env.update(
        DATABASE_URL=db,
        REDIS_URL=REDIS_URL,
        PYTHONUNBUFFERED="1",
        TWILIO_ACCOUNT_SID=TEST_ACCOUNT_SID,
        TWILIO_AUTH_TOKEN=TEST_AUTH_TOKEN,
        OUTBOUND_CALLS_TWILIO_API_URL=fake.url,
        OUTBOUND_CALLS_TWIML_URL="https://example.test/twiml",
        OUTBOUND_CALLS_MAX_CONCURRENT=str(args.slots),
        OUTBOUND_CALLS_MAX_CALLS_PER_SECOND=str(args.cps),
        OUTBOUND_CALLS_DIAL_THREADS=str(args.dial_threads),
        OUTBOUND_CALLS_STATUS_EVENTS=args.events,
        # a callback lost anyway frees its slot after this and is settled by the sweep
        OUTBOUND_CALLS_SLOT_TIMEOUT="20",
        PROSAAS_DISABLE_SERVICES="acme-ticker,recording-worker",
    )
    web = ServeProcess(env, workers=args.web_workers, threads=16, log_path=tmp / "serve.log")
    env["TWILIO_WEBHOOK_BASE_URL"] = web.url  # the same dict the server will start with
    workers: list[Worker] = []
    rt = Runtime(Settings.from_env(env))
    result: dict = {"ok": False}
    try:
        subprocess.run([PROSAAS, "db", "upgrade"], env=env, check=True, capture_output=True)
        ceiling = transport_ceiling(fake, args.businesses * args.slots, args.duration, min(n, 400))
        print(f"transport ceiling ({args.businesses * args.slots} bare SDK threads, "
              f"{args.duration * 1000:.0f} ms per call): {ceiling:.1f} calls/s "
              f"= {ceiling / limit:.2f}x the limit")  # fmt: skip
        fake.create_times.clear()
        fake.final_times.clear()
        fake.max_live.clear()
        fake.creates.clear()
        web.start()
        businesses = seed(rt, args.businesses, per_business)
        workers = [Worker(env, tmp / f"worker{i}.log") for i in range(args.workers)]
        wait_until(
            lambda: all("Outbound dialer loop started" in w.log.read_text() for w in workers), 60
        )
        pids = [w.proc.pid for w in workers] + tree(web.proc.pid)
        cpu_before = {p: cpu_seconds(p) for p in pids}
        own_before = time.process_time()
        for _, token, caller in businesses:
            resp = requests.post(
                f"{web.url}/api/outbound-calls",
                json={
                    "all": True,
                    "caller_id": caller,
                    "max_concurrent": args.slots,
                    "calls_per_second": args.cps,
                },
                headers=bearer(token),
                timeout=30,
            )
            resp.raise_for_status()
        wait_until(lambda: len(fake.final_times) >= n, 600)
        cpu = {p: cpu_seconds(p) - cpu_before[p] for p in pids}
        worker_cpu = sum(cpu[w.proc.pid] for w in workers)
        web_cpu = sum(v for p, v in cpu.items() if p not in {w.proc.pid for w in workers})
        fake_cpu = time.process_time() - own_before
        first, last = min(fake.create_times), max(fake.final_times)
        rate = n / (last - first)
        max_live = max(fake.max_live[c] for _, _, c in businesses)
        creates = dict(fake.creates)
        once = len(creates) == n and set(creates.values()) == {1}

        def completed() -> bool:
            with rt.session() as s:
                return s.execute(
                    text("SELECT count(*) FROM outbound_campaigns WHERE state = 'completed'")
                ).scalar_one() == len(businesses)

        try:
            wait_until(completed, 180, "every campaign completed")
        except AssertionError:
            with rt.session() as s:  # say what is still open, rather than only time out
                left = s.execute(
                    text("SELECT status, count(*) FROM outbound_targets GROUP BY status")
                ).all()
            print(f"campaigns not completed after 180 s; targets by status: {dict(left)}")
            raise
        with rt.session() as s:
            # connections opened to the bench's database (each is a PostgreSQL backend started)
            sessions = s.execute(
                text("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
            ).scalar_one()
        print(f"{n} targets, {args.businesses} businesses, max_concurrent {args.slots}, "
              f"{args.cps:g} calls/s each, {args.workers} workers, "
              f"{args.web_workers} web workers")  # fmt: skip
        print(f"calls: {rate:.1f}/s; limit: {limit:.0f}/s; vs limit: {rate / limit:.2f}x; "
              f"vs transport ceiling: {rate / ceiling:.2f}x")  # fmt: skip
        print(f"max live calls per business seen by the server: {max_live} "
              f"(limit {args.slots}); every target called exactly once: {once}")  # fmt: skip
        lat = sorted(fake.callback_seconds)
        p50, p99 = lat[len(lat) // 2], lat[int(len(lat) * 0.99)]
        lost = sum(1 for c in fake.callback_codes if c != 200)
        codes = Counter(str(c) for c in fake.callback_codes if c != 200)  # 0: no answer at all
        print(f"callbacks: {len(lat)}, answered in p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"
              f"; not delivered: {lost} {dict(codes) or ''}")  # fmt: skip
        print(f"PostgreSQL connections opened: {sessions}")
        print(f"CPU per call: workers {worker_cpu / n * 1000:.1f} ms, web {web_cpu / n * 1000:.1f}"
              f" ms, fake Twilio {fake_cpu / n * 1000:.1f} ms (PostgreSQL and Redis not counted);"
              f" load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")  # fmt: skip
        result = {
            "targets": n,
            "businesses": args.businesses,
            "max_concurrent": args.slots,
            "calls_per_second_per_business": args.cps,
            "call_seconds": args.duration,
            "workers": args.workers,
            "status_events": args.events,
            "calls_per_s": round(rate, 1),
            "limit_per_s": round(limit, 1),
            "vs_limit": round(rate / limit, 3),
            "transport_ceiling_per_s": round(ceiling, 1),
            "vs_ceiling": round(rate / ceiling, 3),
            "max_live_per_business": max_live,
            "called_once": once,
            "callbacks_not_delivered": lost,
            "callbacks_not_delivered_by_code": dict(codes),
            "callback_p50_ms": round(p50 * 1000, 1),
            "callback_p99_ms": round(p99 * 1000, 1),
            "cpu_ms_per_call": {
                "workers": round(worker_cpu / n * 1000, 1),
                "web": round(web_cpu / n * 1000, 1),
                "fake": round(fake_cpu / n * 1000, 1),
            },
            "pg_connections_opened": sessions,
            "load_average": round(os.getloadavg()[0], 1),
            # ok: nothing broke (the limit held, nobody was called twice); the 0.9 target is
            # reported, not enforced, so a slow machine does not fail `make bench`
            "ok": max_live <= args.slots and once,
            "meets_target": rate / limit >= 0.9,
        }
    finally:
        for w in workers:
            w.stop()
        web.stop()
        fake.stop()
        rt.close()
        drop_db(db)
        if os.environ.get("BENCH_LOG_DIR"):
            dest = Path(os.environ["BENCH_LOG_DIR"])
            dest.mkdir(parents=True, exist_ok=True)
            for f in tmp.glob("*.log"):
                (dest / f.name).write_text(f.read_text())
    print(json.dumps(result))
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
