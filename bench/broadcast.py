"""Broadcast sending: throughput against a plain loop, and accuracy of the business's rate.

10,000 recipients (``--quick``: 2,000) through the ``webhook`` provider to a local server that
takes 20 ms per message, sent by real ``prosaas worker`` processes (2 by default, each part
job with ``BROADCAST_SENDER_THREADS`` threads, 4 by default).

(a) No rate limit: messages/s at the server (first to last accepted) against a plain loop in
    the same run sending the same messages with the same HTTP client (the webhook provider's
    urllib3 pool) at the same concurrency (workers x threads), with no database, no claims and
    no rate limiter: ``vs_plain_loop`` = prosaas / plain loop (target >= 0.8).
(b) A business rate of 200/s: the steady rate achieved (messages after the first burst, over
    first-to-last) over the configured one, ``rate_accuracy`` (target 0.95-1.0), and the most
    messages in any one-second window, ``max_window_rate`` (never above rate + burst). When
    the plain loop of (a) is itself slower than the rate (a loaded machine), ``capacity_limited``
    is true: no sender could hold that rate there.

The last line printed is one JSON object. Needs PostgreSQL ($PROSAAS_TEST_PG, default
postgresql+psycopg2://postgres@127.0.0.1:5432) and Redis ($BROADCAST_BENCH_REDIS_URL, default
redis://127.0.0.1:6379/12, flushed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import redis
from prosaas_broadcast.config import BroadcastConfig
from prosaas_broadcast.providers import Message
from prosaas_broadcast.providers.webhook import WebhookProvider
from prosaas_broadcast.testing import FakeProvider, add_leads, phone, provider_env
from sqlalchemy import create_engine, text

from prosaas_core import Runtime, Settings, create_app, migrate
from prosaas_core.tokens import create_token

PG = os.environ.get("PROSAAS_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("BROADCAST_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
PROSAAS = str(Path(sys.executable).with_name("prosaas"))
LATENCY = 0.020


def create_db() -> str:
    name = f"prosaas_bench_bc_{uuid.uuid4().hex[:8]}"
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


def plain_loop(fake: FakeProvider, env: dict, n: int, concurrency: int) -> float:
    """Messages/s of `concurrency` threads sending `n` messages with the provider's client."""
    provider = WebhookProvider(BroadcastConfig.from_settings(Settings.from_env(env)))
    counter = iter(range(n))
    lock = threading.Lock()

    def loop() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            provider.send(Message(0, i, 0, i, "sms", phone(i), "Hi"))

    threads = [threading.Thread(target=loop) for _ in range(concurrency)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return n / (time.monotonic() - began)


class Workers:
    def __init__(self, env: dict, n: int, logdir: Path) -> None:
        self.procs = []
        for i in range(n):
            log = open(logdir / f"worker{i}.log", "w")  # noqa: SIM115
            self.procs.append(
                subprocess.Popen(
                    [PROSAAS, "worker", "--queues", "messaging"],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)


def run_broadcast(rt, client, headers, fake: FakeProvider, n: int, timeout: float) -> dict:
    fake.accepted.clear()
    fake.keys.clear()
    resp = client.post(
        "/api/broadcasts", json={"all": True, "template": "Hi {name}"}, headers=headers
    )
    assert resp.status_code == 202, resp.get_json()
    bid = resp.get_json()["id"]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        b = client.get(f"/api/broadcasts/{bid}", headers=headers).get_json()
        if b["status"] in ("succeeded", "cancelled", "failed"):
            break
        time.sleep(0.2)
    else:
        raise SystemExit(f"broadcast {bid} did not finish in {timeout}s: {b}")
    times = fake.accepted_times()
    assert b["counts"]["sent"] == n == len(times), b
    return {"times": times, "repeats": sum(fake.repeats.values())}


def phase(args, fake, rate: str, logdir: Path) -> dict:
    """A fresh database and business, `args.recipients` leads, workers at `rate`."""
    url = create_db()
    redis.Redis.from_url(REDIS_URL).flushdb()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROSAAS_", "BROADCAST_"))}
    env.update(
        DATABASE_URL=url,
        REDIS_URL=REDIS_URL,
        PROSAAS_DISABLE_SERVICES="recording-worker,acme-ticker",
        **provider_env(fake),
        BROADCAST_PROVIDER="webhook",
        # a Twilio token without a public base URL refuses to start (the status callback)
        BROADCAST_PUBLIC_BASE_URL="https://hooks.example.com",
        BROADCAST_RATE=rate,
        BROADCAST_SENDER_THREADS=str(args.threads),
        BROADCAST_PART_SIZE=str(math.ceil(args.recipients / args.workers)),
        BROADCAST_MAX_PARTS=str(args.workers),
    )
    rt = Runtime(Settings.from_env(env))
    workers = None
    try:
        migrate.upgrade(rt)
        with rt.session() as s:
            business = s.execute(
                text("INSERT INTO businesses (name) VALUES ('bench') RETURNING id")
            ).scalar()
            token = create_token(s, business)
        add_leads(
            rt, business, [{"name": f"L{i}", "phone": phone(i)} for i in range(args.recipients)]
        )
        workers = Workers(env, args.workers, logdir)
        time.sleep(2)  # let the workers start
        client = create_app(runtime=rt).test_client()
        out = run_broadcast(
            rt, client, {"Authorization": f"Bearer {token}"}, fake, args.recipients, timeout=600
        )
        out["env"] = env
        return out
    finally:
        if workers:
            workers.stop()
        rt.close()
        drop_db(url)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="2,000 recipients instead of 10,000")
    ap.add_argument("--recipients", type=int)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--rate", type=int, default=200)
    args = ap.parse_args()
    args.recipients = args.recipients or (2000 if args.quick else 10_000)
    concurrency = args.workers * args.threads
    results: dict = {"recipients": args.recipients, "workers": args.workers}
    results["concurrency"] = concurrency
    with tempfile.TemporaryDirectory() as tmp, FakeProvider(latency=LATENCY) as fake:
        logdir = Path(tmp)
        print(
            f"{args.recipients} recipients, {args.workers} workers x {args.threads} threads, "
            f"provider latency {LATENCY * 1000:.0f} ms"
        )
        a = phase(args, fake, "100000/s", logdir)
        times = a["times"]
        prosaas_rate = (len(times) - 1) / (times[-1] - times[0])
        fake.accepted.clear()
        plain = plain_loop(fake, a["env"], args.recipients, concurrency)
        results.update(
            prosaas_msgs_per_s=round(prosaas_rate, 1),
            plain_loop_msgs_per_s=round(plain, 1),
            vs_plain_loop=round(prosaas_rate / plain, 3),
            repeats_unlimited=a["repeats"],
        )
        print(
            f"(a) no rate limit: prosaas {prosaas_rate:.1f} msg/s, plain loop {plain:.1f} "
            f"msg/s at the same concurrency: {prosaas_rate / plain:.2f}x"
        )
        fake.accepted.clear()
        b = phase(args, fake, f"{args.rate}/s", logdir)
        times = b["times"]
        burst = math.ceil(args.rate / 10)
        achieved = (len(times) - burst) / (times[-1] - times[0])
        # a rate above what the plain loop itself reaches on this machine cannot be held by
        # any sender: the accuracy then measures the machine, not the limiter
        capacity_limited = args.rate > plain
        if capacity_limited:
            print(
                f"note: {args.rate}/s is above this machine's plain-loop capacity "
                f"({plain:.0f}/s): rate_accuracy is bounded by capacity here"
            )
        results.update(
            capacity_limited=capacity_limited,
            rate_configured=args.rate,
            rate_achieved=round(achieved, 1),
            rate_accuracy=round(achieved / args.rate, 3),
            max_window_rate=fake.max_window(1.0),
            burst=burst,
            took_s=round(times[-1] - times[0], 2),
        )
        print(
            f"(b) at {args.rate}/s: achieved {achieved:.1f}/s ({achieved / args.rate:.3f}), "
            f"worst 1-second window {fake.max_window(1.0)} (limit {args.rate}+{burst} burst)"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
