"""The dashboard's cost: drain rate with open, polling pages vs none, and poll latency.

(a) drain: N trivial jobs (acme_echo) drained by two `prosaas worker --burst` processes, with
    20 simulated dashboard pages polling a real `prosaas serve` (10 Jobs pages asking for 50
    jobs' progress every second, 10 Overview pages every 2 seconds, as the pages' own script
    does) against no page at all; interleaved rounds (ABAB...), median of each side.
    ``drain_with_pages_vs_none`` = with pages / without (target >= 0.9);
(b) poll latency with 100,000 jobs in background_jobs (spread over statuses, types,
    businesses and the last hour): p99 of the Jobs page's poll (``poll_p99_ms``, target < 50)
    and of the Overview poll (``overview_poll_p99_ms``), sequential requests over HTTP.

    python bench/dashboard.py [--quick] [--jobs N] [--rounds K]

Needs PostgreSQL ($PROSAAS_TEST_PG) and Redis ($BENCH_REDIS_URL, default
redis://127.0.0.1:6379/13; FLUSHDB'd) and the acme test plugin (installed by the Makefile).
Last line: a JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import redis
import requests
from sqlalchemy import create_engine, text

BIN = Path(sys.executable).parent
PG = os.environ.get("PROSAAS_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
PAGES = 20


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


def signed_in(url: str, token: str) -> requests.Session:
    """A browser-like session: the sign-in form's CSRF value, then the POST."""
    s = requests.Session()
    page = s.get(url + "/dashboard/login", timeout=10).text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    resp = s.post(
        url + "/dashboard/login", data={"csrf": csrf, "token": token}, allow_redirects=False
    )
    if resp.status_code != 303:
        sys.exit(f"sign-in failed: {resp.status_code} {resp.text[:300]}")
    return s


class Pages:
    """`PAGES` simulated open pages, each a thread polling at its page's interval."""

    def __init__(self, url: str, token: str, ids: list[int]) -> None:
        self.url, self.token, self.ids = url, token, ids
        self.stop = threading.Event()
        self.requests = 0
        self.errors = 0
        self.threads: list[threading.Thread] = []

    def _run(self, path: str, interval: float) -> None:
        s = signed_in(self.url, self.token)
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                if s.get(self.url + path, timeout=10).status_code != 200:
                    self.errors += 1
            except requests.RequestException:
                self.errors += 1
            self.requests += 1
            self.stop.wait(max(0.0, interval - (time.monotonic() - started)))

    def start(self) -> Pages:
        ids = ",".join(map(str, self.ids[:50]))
        for i in range(PAGES):
            path, interval = (
                (f"/dashboard/api/jobs?ids={ids}", 1.0)
                if i % 2 == 0
                else ("/dashboard/api/overview", 2.0)
            )
            t = threading.Thread(target=self._run, args=(path, interval), daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(15)


def drain_round(rt, env: dict, bid: int, n: int, pages: Pages | None) -> float:
    from prosaas_core.jobs.enqueue import enqueue

    with rt.engine.begin() as c:
        c.execute(text("DELETE FROM background_jobs"))
    ids = [enqueue(rt, "acme_echo", bid, {"message": f"m{i}"}).id for i in range(n)]
    if pages is not None:
        pages.ids = ids[::-1]
        pages.start()
        time.sleep(1.0)  # every page has signed in and is polling
    try:
        procs = [
            subprocess.Popen(
                [str(BIN / "prosaas"), "worker", "--burst", "--queues", "default"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            for _ in range(2)
        ]
        for p in procs:
            _, err = p.communicate(timeout=1800)
            if p.returncode != 0:
                sys.exit(f"worker failed:\n{err[-2000:]}")
    finally:
        if pages is not None:
            pages.close()
    with rt.engine.connect() as c:
        first, last, done = c.execute(
            text("SELECT min(finished_at), max(finished_at), count(*) FROM background_jobs "
                 "WHERE status = 'succeeded'")
        ).one()  # fmt: skip
    if done != n:
        sys.exit(f"only {done}/{n} jobs succeeded")
    return (n - 1) / max((last - first).total_seconds(), 1e-9)


def serve(env: dict, log: Path):
    from prosaas_core.testing import ServeProcess

    return ServeProcess(env, workers=2, threads=4, log_path=log).start(timeout=90)


def admin_and_business(rt) -> tuple[str, int]:
    from prosaas_core.models import Business
    from prosaas_core.tokens import create_admin_token

    with rt.session() as s:
        token = create_admin_token(s, "bench")[0]
        b = Business(name="bench")
        s.add(b)
        s.flush()
        return token, b.id


def bench_drain(env: dict, n: int, rounds: int, tmp: Path) -> dict:
    rt = runtime(env)
    token, bid = admin_and_business(rt)
    server = serve(env, tmp / "serve-drain.log")
    rates: dict[str, list[float]] = {"none": [], "pages": []}
    polls = errors = 0
    try:
        for r in range(rounds):
            for side in ("none", "pages") if r % 2 == 0 else ("pages", "none"):
                pages = Pages(server.url, token, []) if side == "pages" else None
                rate = drain_round(rt, env, bid, n, pages)
                rates[side].append(rate)
                if pages is not None:
                    polls += pages.requests
                    errors += pages.errors
                print(f"  round {r + 1} {side:>5}: {rate:8.1f} jobs/s", flush=True)
    finally:
        server.stop()
        rt.close()
    none, with_pages = statistics.median(rates["none"]), statistics.median(rates["pages"])
    return {
        "drain_none_per_s": round(none, 1),
        "drain_with_pages_per_s": round(with_pages, 1),
        "drain_with_pages_vs_none": round(with_pages / none, 3),
        "page_polls": polls,
        "page_poll_errors": errors,
    }


FILL = """
INSERT INTO background_jobs (business_id, job_type, queue, status, payload, attempts,
    processed, total, created_at, updated_at, started_at, finished_at)
SELECT 1 + (i % :businesses),
       (ARRAY['acme_echo','acme_count','acme_fail','acme_sleep'])[1 + i % 4],
       CASE WHEN i % 4 = 1 THEN 'acme' ELSE 'default' END,
       CASE WHEN i % 50 = 0 THEN 'queued' WHEN i % 97 = 0 THEN 'running'
            WHEN i % 13 = 0 THEN 'failed' WHEN i % 31 = 0 THEN 'cancelled'
            ELSE 'succeeded' END,
       jsonb_build_object('message', 'm' || i), 1, i % 100, 100,
       now() - make_interval(secs => (:n - i) * 3600.0 / :n),
       now(), now() - make_interval(secs => (:n - i) * 3600.0 / :n),
       CASE WHEN i % 50 = 0 OR i % 97 = 0 THEN NULL
            ELSE now() - make_interval(secs => (:n - i) * 3600.0 / :n) END
FROM generate_series(1, :n) AS i
"""


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[98]


def bench_poll(env: dict, rows: int, samples: int, tmp: Path) -> dict:
    from prosaas_core.models import Business

    rt = runtime(env)
    token, _ = admin_and_business(rt)
    with rt.session() as s:
        s.add_all([Business(name=f"b{i}") for i in range(19)])
    with rt.engine.begin() as c:
        c.execute(text(FILL), {"n": rows, "businesses": 20})
        c.execute(text("ANALYZE background_jobs"))
        ids = [r for (r,) in c.execute(text("SELECT id FROM background_jobs ORDER BY id DESC"))]
    server = serve(env, tmp / "serve-poll.log")
    try:
        s = signed_in(server.url, token)
        timings: dict[str, list[float]] = {"jobs": [], "overview": []}
        for i in range(samples):
            # a different page of 50 jobs each time, across the whole table
            start = (i * 997) % (len(ids) - 50)
            page_ids = ",".join(map(str, ids[start : start + 50]))
            for name, path in (
                ("jobs", f"/dashboard/api/jobs?ids={page_ids}"),
                ("overview", "/dashboard/api/overview"),
            ):
                t0 = time.perf_counter()
                resp = s.get(server.url + path, timeout=10)
                timings[name].append((time.perf_counter() - t0) * 1000)
                if resp.status_code != 200:
                    sys.exit(f"{path}: {resp.status_code} {resp.text[:300]}")
        first_page = s.get(server.url + "/dashboard/jobs", timeout=10)
        assert first_page.status_code == 200
    finally:
        server.stop()
        rt.close()
    return {
        "rows": rows,
        "samples": samples,
        "poll_p50_ms": round(statistics.median(timings["jobs"]), 2),
        "poll_p99_ms": round(p99(timings["jobs"]), 2),
        "overview_poll_p50_ms": round(statistics.median(timings["overview"]), 2),
        "overview_poll_p99_ms": round(p99(timings["overview"]), 2),
    }


def main() -> None:
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller runs, a minute or two")
    ap.add_argument("--jobs", type=int, help="jobs per drain round (default 5000)")
    ap.add_argument("--rounds", type=int, help="drain rounds per side")
    args = ap.parse_args()
    n = args.jobs or (800 if args.quick else 5000)
    rounds = args.rounds or (2 if args.quick else 3)
    rows, samples = (100_000, 100) if args.quick else (100_000, 500)
    tmp = Path(tempfile.mkdtemp(prefix="prosaas-bench-dashboard-"))
    results: dict = {}
    for name, fn in (
        ("drain", lambda env: bench_drain(env, n, rounds, tmp)),
        ("poll", lambda env: bench_poll(env, rows, samples, tmp)),
    ):
        db = create_db()
        redis.Redis.from_url(REDIS_URL).flushdb()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PROSAAS_")},
            "DATABASE_URL": f"{PG}/{db}".replace("+psycopg2", ""),
            "REDIS_URL": REDIS_URL,
            "PROSAAS_DISABLE_SERVICES": "acme-ticker,recording-worker",
            "PROSAAS_SHUTDOWN_TIMEOUT": "5",
            "PROSAAS_SECRET_KEY": "bench-only-secret",
        }
        os.environ.update({k: v for k, v in env.items() if k.startswith(("DATABASE", "REDIS"))})
        print(f"{name}:", flush=True)
        try:
            results[name] = fn(env)
        finally:
            drop_db(db)
        print("  " + json.dumps(results[name]), flush=True)
    d, p = results["drain"], results["poll"]
    load = os.getloadavg()
    summary = {
        "jobs_per_round": n,
        "rounds": rounds,
        "pages": PAGES,
        **d,
        **p,
        "loadavg_1m": round(load[0], 2),
    }
    print(
        f"drain with {PAGES} pages / none: {d['drain_with_pages_vs_none']:.3f} (target >= 0.9); "
        f"poll p99 {p['poll_p99_ms']} ms with {rows} jobs (target < 50); overview poll p99 "
        f"{p['overview_poll_p99_ms']} ms; load average {load[0]:.2f}"
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
