"""Recording downloads: throughput against the limit the per-business slots allow.

300 recordings over 6 businesses (``--quick``: 120), served by a local HTTP server standing in
for Twilio that takes 100 ms per file, downloaded by real ``prosaas worker`` processes (2 by
default) with 3 slots per business. The slots allow at most 6 x 3 = 18 downloads at once, so
the limit is 18 / 0.1 s = 180 downloads/s; the baseline in the same run is one sequential
downloader (what a single consumer thread would do: about 1 / latency). Note that 300 files
in 18 slots are 17 rounds of 100 ms, not 16.67: even with no overhead at all a run reaches
300 / 1.7 s = 0.98 x the limit (``--quick``: 0.95).

Reports downloads/s (first request to last byte at the server), its ratio to the limit and the
highest concurrency per business the server saw. Target: >= 0.95 x the limit, never above the
slot limit. prosaas runs at its DEFAULT settings (poll interval, download threads per worker,
leases...) unless a flag sets one (``--threads``, ``--poll-interval``); every setting in effect,
as the plugin reads it, is in the JSON under ``settings``. The last line is JSON; the exit code is
non-zero only when a download was lost, a request was refused for its credentials or the slot
limit was broken (``ok``), not when the target is missed (``meets_target``).

``transport_ceiling_per_s``: 18 bare threads in this process downloading the same files from
the same server with no database, Redis or files: what this machine and the stand-in sustain
right now; ``vs_ceiling`` is prosaas against it. ``timeline`` is where the slots' time went,
from the server's view (see `slot_timeline`): ``handoff`` is how long a freed slot stayed idle
before the business's next download reached the server, ``ramp`` how long each slot waited for
its first download, ``service`` what the server took beyond the 100 ms.

The stand-in: ``prosaas_recordings.testing.StubTwilio`` by default (a ThreadingHTTPServer in
this process). ``--stub process`` runs ``bench/_recordings_stub.py`` instead: one asyncio loop
in a process of its own, the same bytes after the same 100 ms over keep-alive HTTP/1.1, the same
basic auth (a wrong one is a 401, counted: ``unauthorized``) and the same per-business counting
(from the parsed request to just before the last byte). It was written to check whether the
stand-in sharing this process's GIL capped the figures: on 2026-12-02 it did not (the 18-thread
ceiling was 170/s with either; prosaas was no faster against it), so the default stayed. The
ceiling's threads use the download threads' own HTTP client (urllib3, one keep-alive
connection each, opened before the clock starts) instead of requests.Session (since
2026-12-02). Neither touches the 100 ms, the slot counts or what the limit is.

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
from base64 import b64encode
from pathlib import Path

import redis
from prosaas_recordings import store
from prosaas_recordings.httpclient import HttpClient
from prosaas_recordings.tables import calls, recording_tasks
from prosaas_recordings.testing import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, StubTwilio
from sqlalchemy import create_engine, func, insert, select, text

from prosaas_core import Runtime, Settings
from prosaas_core.testing import PROSAAS, WorkerProcess
from prosaas_core.testing import wait_until as wait_for

sys.path.insert(0, str(Path(__file__).parent))
from _recordings_stub import StubProcess  # noqa: E402

Stub = StubTwilio | StubProcess

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


AUTH = {
    "Authorization": "Basic " + b64encode(f"{TEST_ACCOUNT_SID}:{TEST_AUTH_TOKEN}".encode()).decode()
}


def _get(http: HttpClient, url: str) -> None:
    """One GET of a whole file through the client the download threads use (urllib3)."""
    resp = http.get(url, headers=AUTH, connect_timeout=10, read_timeout=30)
    body = resp.read()
    resp.release_conn()
    if resp.status != 200 or not body:
        raise RuntimeError(f"{url}: HTTP {resp.status}")


def sequential_baseline(stub: Stub, n: int) -> float:
    """Downloads/s of one thread fetching one file after another."""
    http = HttpClient()
    started = time.monotonic()
    for i in range(n):
        _get(http, stub.url(0, f"REbase{i}") + ".mp3")
    return n / (time.monotonic() - started)


def transport_ceiling(stub: Stub, n: int, concurrency: int) -> float:
    """Downloads/s of `concurrency` bare threads (no database, Redis or files; the download
    threads' HTTP client, one keep-alive connection each, started before the clock): what
    this machine's HTTP stack and the stub sustain right now, the practical ceiling."""
    import threading

    clients = [HttpClient() for _ in range(concurrency)]
    for i, http in enumerate(clients):  # connections open, as the workers' are after one file
        _get(http, stub.url(0, f"REwarm{i}") + ".mp3")
    left = list(range(n))
    lock, go = threading.Lock(), threading.Event()

    def run(http: HttpClient) -> None:
        go.wait()
        while True:
            with lock:
                if not left:
                    return
                i = left.pop()
            _get(http, stub.url(0, f"REceil{i}") + ".mp3")

    threads = [threading.Thread(target=run, args=(h,)) for h in clients]
    for t in threads:
        t.start()
    started = time.monotonic()
    go.set()
    for t in threads:
        t.join()
    return n / (time.monotonic() - started)


def slot_timeline(
    transfers: list[tuple[int, str, float, float]], slots: int, latency: float
) -> dict[str, float]:
    """Where the slots' time went, from the server's view of each transfer (start, last byte).

    Each download after a business's first `slots` is paired with the earliest earlier end of
    that business not yet paired (the slot it took over): ``handoff`` is that end to its start,
    the time a freed slot stayed idle. ``service`` is what the server took beyond `latency`
    per file; ``ramp`` is the wait from the first start of all to the first start in each slot,
    ``tail`` from a business's last end to the last end of all (its share of the last round).
    """
    import statistics

    by_business: dict[int, list[tuple[float, float]]] = {}
    for business, _, start, end in transfers:
        by_business.setdefault(business, []).append((start, end))
    first = min(s for _, _, s, _ in transfers)
    last = max(e for _, _, _, e in transfers)
    handoffs, ramps, tails = [], [], []
    for spans in by_business.values():
        spans.sort()
        ends: list[float] = []
        for i, (start, end) in enumerate(spans):
            if i >= slots:
                ends.sort()
                handoffs.append(start - ends.pop(0))
            ends.append(end)
        ramps.extend(start - first for start, _ in spans[:slots])
        tails.append(last - max(e for _, e in spans))
    service = [e - s - latency for _, _, s, e in transfers]

    def ms(values: list[float], q: float | None = None) -> float:
        if not values:
            return 0.0
        if q is None:
            return round(statistics.mean(values) * 1000, 2)
        return round(sorted(values)[min(len(values) - 1, int(q * len(values)))] * 1000, 2)

    return {
        "handoff_mean_ms": ms(handoffs),
        "handoff_p50_ms": ms(handoffs, 0.5),
        "handoff_p90_ms": ms(handoffs, 0.9),
        "handoff_max_ms": ms(handoffs, 1.0),
        "service_mean_ms": ms(service),
        "service_p90_ms": ms(service, 0.9),
        "ramp_mean_ms": ms(ramps),
        "ramp_max_ms": ms(ramps, 1.0),
        "tail_mean_ms": ms(tails),
    }


def seed(rt: Runtime, stub: Stub, n: int, businesses: int) -> list[int]:
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
    ap.add_argument(
        "--stub",
        choices=("process", "thread"),
        default="thread",
        help="the Twilio stand-in: the in-process threaded StubTwilio the tests use (default)"
        " or bench/_recordings_stub.py, asyncio in its own process",
    )
    args = ap.parse_args()
    n = args.recordings or (120 if args.quick else 300)
    limit = args.businesses * args.slots / args.latency

    r = redis.Redis.from_url(REDIS_URL)
    for key in r.scan_iter("prosaas:recordings:slots:*"):
        r.delete(key)
    db = create_db()
    tmp = Path(tempfile.mkdtemp(prefix="prosaas-bench-rec-"))
    stub: Stub
    if args.stub == "thread":
        stub = StubTwilio(size=16 * 1024, latency=args.latency).start()
    else:
        stub = StubProcess(
            account_sid=TEST_ACCOUNT_SID,
            auth_token=TEST_AUTH_TOKEN,
            size=16 * 1024,
            latency=args.latency,
        )
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
            if isinstance(stub, StubProcess):
                return stub.served_count("RE0") >= n
            return sum(v for sid, v in list(stub.served.items()) if sid.startswith("RE0")) >= n

        # Watch the stub (in memory) while downloads run, so the bench's own database polling
        # does not compete with the stub for this process's CPU; then wait for the bookkeeping.
        wait_for(all_served, timeout=120, step=0.05)
        wait_for(done, timeout=120, step=0.05)
        cpu = sum(_cpu_seconds(w.proc.pid) for w in workers) - cpu_idle
        if isinstance(stub, StubProcess):
            stub.refresh()
        first = min(
            t[0]
            for sid, t in stub.request_times.items()
            if t and not sid.startswith(("REbase", "REceil", "REwarm"))
        )
        last = stub.last_served
        rate = n / (last - first)
        served = sum(v for sid, v in stub.served.items() if sid.startswith("RE0"))
        # (a StubTwilio older than 2026-12-02, on PYTHONPATH for a before/after run, has none)
        transfers = [t for t in getattr(stub, "transfers", []) if t[1].startswith("RE0")]
        timeline = slot_timeline(transfers, args.slots, args.latency) if transfers else {}
        print("slot timeline (server's view, ms): "
              + ", ".join(f"{k} {v:g}" for k, v in timeline.items()))  # fmt: skip
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
            "unauthorized": stub.unauthorized,
            "ok": max_conc <= args.slots and served == n and stub.unauthorized == 0,
            "timeline": timeline,
            "stub": args.stub,
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
