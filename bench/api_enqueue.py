"""Benchmark: `POST /api/jobs` on `prosaas serve` against bare Flask endpoints that only
insert one row, all on the same stack (gunicorn gthread, same workers/threads, same
PostgreSQL), driven by the same N concurrent keep-alive clients in the same run.

    python bench/api_enqueue.py [--quick] [--clients N] [--seconds S] [--workers W]
                                [--bare-style driver|transaction]

Two baselines, both measured in every run (one bare server serves both):

- ``driver`` (the strict one, the default headline): the INSERT alone, in autocommit, on a bare
  psycopg2 cursor: one round trip, no SQLAlchemy machinery. prosaas runs its own INSERT this way,
  so this is what the API would cost with nothing else around the INSERT.
- ``transaction``: the plain SQLAlchemy idiom, ``engine.begin()`` around the same INSERT
  (BEGIN + INSERT + COMMIT: three round trips). Kept for comparison with older figures.

The three targets are loaded in turn, in mirrored order (driver, transaction, prosaas, prosaas,
transaction, driver), so a change in the machine's background load during the run weighs on all
alike. Prints requests/s, p50 and p99 for each, the CPU each costs per request (server processes
and their PostgreSQL backends) and the ratios; the last line is JSON with ``vs_bare`` (requests/s
ratio to the ``--bare-style`` baseline, default driver), ``vs_driver`` and ``vs_transaction``,
``p50_ms`` and ``p99_ms`` (prosaas), each baseline's figures, ``accepted`` and ``pushed``
(prosaas's 202s and the RQ jobs in its queue once its server stopped: equal, or the API lost
pushes) and the load average.
Needs PostgreSQL ($PROSAAS_TEST_PG) and Redis ($PROSAAS_TEST_REDIS, db $PROSAAS_TEST_REDIS_DB).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

PG = os.environ.get("PROSAAS_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432")
REDIS = os.environ.get("PROSAAS_TEST_REDIS", "redis://127.0.0.1:6379")
REDIS_DB = int(os.environ.get("PROSAAS_TEST_REDIS_DB", "3"))
BIN = Path(sys.executable).parent


def bare_app():
    """The baselines: one INSERT of a job row per request, nothing else, on the same engine
    settings as prosaas (``make_engine``). ``POST /bare/driver``: the INSERT alone in
    autocommit on a bare driver cursor (one round trip). ``POST /bare/transaction``: the plain
    SQLAlchemy idiom, ``engine.begin()`` around the INSERT (BEGIN, INSERT, COMMIT)."""
    from flask import Flask, jsonify

    from prosaas_core.db import make_engine

    engine = make_engine(os.environ["DATABASE_URL"])
    business_id = int(os.environ["BENCH_BUSINESS_ID"])
    sql = (
        "INSERT INTO background_jobs (business_id, job_type, queue, status, payload) "
        "VALUES (%s, 'acme_echo', 'default', 'queued', '{\"message\": \"x\"}') RETURNING id"
    )
    app = Flask("bare")

    @app.post("/bare/driver")
    def bare_driver():
        # written out here rather than borrowed from prosaas_core, so the baseline stays the
        # bare minimum whatever the product's helper becomes
        raw = engine.raw_connection()
        try:
            raw.dbapi_connection.autocommit = True
            with raw.dbapi_connection.cursor() as cur:
                cur.execute(sql, (business_id,))
                job_id = cur.fetchone()[0]
        finally:
            raw.close()
        return jsonify({"id": job_id, "status": "queued"}), 202

    @app.post("/bare/transaction")
    def bare_transaction():
        with engine.begin() as conn:
            job_id = conn.exec_driver_sql(sql, (business_id,)).scalar_one()
        return jsonify({"id": job_id, "status": "queued"}), 202

    return app


def _load(url: str, headers: dict, body: dict, clients: int, seconds: float) -> dict:
    import requests

    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client() -> None:
        s = requests.Session()
        mine: list[float] = []
        bad = 0
        while time.monotonic() < stop:
            t = time.perf_counter()
            try:
                r = s.post(url, json=body, headers=headers, timeout=30)
            except requests.RequestException:  # counted, not the end of this client
                mine.append(time.perf_counter() - t)
                bad += 1
                continue
            mine.append(time.perf_counter() - t)
            bad += r.status_code != 202
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    start = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"latencies": latencies, "errors": errors[0], "elapsed": time.monotonic() - start}


_TICK = os.sysconf("SC_CLK_TCK")


def _proc_stat(pid: int | str) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _cpu_by_pid(pgid: int, admin, db: str) -> dict[str, dict[int, float]]:
    """User + system CPU seconds (all threads) of a server's processes (its process group:
    gunicorn's master and workers) and of the PostgreSQL backends serving `db` (the database
    runs on this machine)."""
    from sqlalchemy import text

    with admin.connect() as conn:
        backends = conn.execute(
            text("SELECT pid FROM pg_stat_activity WHERE datname = :d"), {"d": db}
        ).scalars()
        backends = list(backends)
    server = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _proc_stat(entry.name)
            if fields and int(fields[2]) == pgid:
                server.append(int(entry.name))
    out: dict[str, dict[int, float]] = {}
    for kind, pids in (("server", server), ("db", backends)):
        out[kind] = {}
        for pid in pids:
            fields = _proc_stat(pid)
            if fields:
                out[kind][pid] = (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime
    return out


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _summary(rounds: list[dict]) -> dict:
    latencies = [x for r in rounds for x in r["latencies"]]
    elapsed = sum(r["elapsed"] for r in rounds)
    q = statistics.quantiles(latencies, n=100)
    n = len(latencies)
    return {
        "requests": n,
        "errors": sum(r["errors"] for r in rounds),
        "rps": n / elapsed,
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
        "server_cpu_ms": sum(r["server_cpu"] for r in rounds) / n * 1000,
        "db_cpu_ms": sum(r["db_cpu"] for r in rounds) / n * 1000,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a short run (under a minute)")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument(
        "--bare-style",
        choices=("driver", "transaction"),
        default="driver",
        help="which baseline is the headline vs_bare (both are always measured): the INSERT "
        "alone on a driver cursor (driver, default) or in engine.begin() (transaction)",
    )
    ap.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_bare:
        from prosaas_core.cli.serve import run_gunicorn

        run_gunicorn(bare_app, port=args.serve_bare, workers=args.workers, threads=args.threads)
        return
    seconds = args.seconds or (8.0 if args.quick else 30.0)

    import redis
    from sqlalchemy import create_engine, text

    from prosaas_core.runtime import Runtime
    from prosaas_core.settings import Settings
    from prosaas_core.testing import ServeProcess, business_with_token

    name = f"prosaas_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(f"{PG}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    redis_url = f"{REDIS}/{REDIS_DB}"
    env = {**os.environ, "DATABASE_URL": f"{PG}/{name}", "REDIS_URL": redis_url}
    env.pop("RUN_MIGRATIONS", None)
    r = redis.Redis.from_url(redis_url)
    r.flushdb()  # the queue's length is checked at the end
    try:
        subprocess.run(
            [str(BIN / "prosaas"), "db", "upgrade"], env=env, check=True, capture_output=True
        )
        rt = Runtime(Settings.from_env(env))
        business_id, token = business_with_token(rt, "bench")
        rt.close()
        env["BENCH_BUSINESS_ID"] = str(business_id)
        common = ["--workers", str(args.workers), "--threads", str(args.threads)]
        prosaas = ServeProcess(env, workers=args.workers, threads=args.threads)
        bare = ServeProcess(env)
        bare.cmd = [sys.executable, __file__, "--serve-bare", str(bare.port), *common]
        print(
            f"api_enqueue: {args.clients} clients, {seconds:g}s per target in mirrored rounds, "
            f"gunicorn gthread {args.workers} workers x {args.threads} threads, "
            f"{os.cpu_count()} CPUs, headline baseline {args.bare_style}, "
            f"load average {_loadavg()}"
        )
        job = {"job_type": "acme_echo", "payload": {"message": "x"}}
        targets = {
            "driver": (bare, "/bare/driver", {}, {}),
            "transaction": (bare, "/bare/transaction", {}, {}),
            "prosaas": (prosaas, "/api/jobs", {"Authorization": f"Bearer {token}"}, job),
        }
        order = ("driver", "transaction", "prosaas", "prosaas", "transaction", "driver")
        rounds: dict[str, list[dict]] = {label: [] for label in targets}
        accepted = 0  # prosaas's 202s: each must reach its RQ queue (it pushes behind them)
        with bare, prosaas:
            for label, (srv, path, headers, body) in targets.items():  # warm-up
                res = _load(srv.url + path, headers, body, args.clients, min(2.0, seconds / 4))
                if label == "prosaas":
                    accepted += len(res["latencies"]) - res["errors"]
            for label in order:
                srv, path, headers, body = targets[label]
                before = _cpu_by_pid(srv.proc.pid, admin, name)
                res = _load(srv.url + path, headers, body, args.clients, seconds / 2)
                after = _cpu_by_pid(srv.proc.pid, admin, name)
                if label == "prosaas":
                    accepted += len(res["latencies"]) - res["errors"]
                for kind in ("server", "db"):
                    res[f"{kind}_cpu"] = sum(
                        cpu - before[kind].get(pid, 0.0) for pid, cpu in after[kind].items()
                    )
                rounds[label].append(res)
        # the servers are stopped (gracefully: the pusher pushes what is pending first)
        pushed = r.llen("rq:queue:default")
        results = {label: _summary(r) for label, r in rounds.items()}
        for label, res in results.items():
            print(
                f"  {label:11s} {res['rps']:8.1f} req/s  p50 {res['p50_ms']:6.1f} ms  "
                f"p99 {res['p99_ms']:6.1f} ms  cpu/req: server {res['server_cpu_ms']:.2f} ms, "
                f"postgres {res['db_cpu_ms']:.2f} ms  "
                f"({res['requests']} requests, {res['errors']} not 202)"
            )
        p = results["prosaas"]
        vs = {base: p["rps"] / results[base]["rps"] for base in ("driver", "transaction")}
        print(
            f"  ratio       {vs['driver']:.2f}x the strict driver baseline's requests/s "
            f"(target >= 0.8), {vs['transaction']:.2f}x the engine.begin() one"
        )
        print(
            f"  pushed      {pushed} RQ jobs for the {accepted} jobs prosaas accepted"
            + ("" if pushed == accepted else "  <-- NOT EQUAL: pushes lost or doubled")
        )
        out = {
            "vs_bare": round(vs[args.bare_style], 3),
            "vs_driver": round(vs["driver"], 3),
            "vs_transaction": round(vs["transaction"], 3),
            "rps": round(p["rps"], 1),
            "p50_ms": round(p["p50_ms"], 2),
            "p99_ms": round(p["p99_ms"], 2),
            "server_cpu_ms": round(p["server_cpu_ms"], 2),
            "db_cpu_ms": round(p["db_cpu_ms"], 2),
        }
        for base in ("driver", "transaction"):
            b = results[base]
            out.update(
                {
                    f"{base}_rps": round(b["rps"], 1),
                    f"{base}_p50_ms": round(b["p50_ms"], 2),
                    f"{base}_p99_ms": round(b["p99_ms"], 2),
                    f"{base}_server_cpu_ms": round(b["server_cpu_ms"], 2),
                    f"{base}_db_cpu_ms": round(b["db_cpu_ms"], 2),
                }
            )
        b = results[args.bare_style]  # the headline baseline, under the old key names
        out.update(
            {
                "bare_rps": round(b["rps"], 1),
                "bare_p50_ms": round(b["p50_ms"], 2),
                "bare_p99_ms": round(b["p99_ms"], 2),
                "bare_style": args.bare_style,
                "clients": args.clients,
                "seconds": seconds,
                "workers": args.workers,
                "threads": args.threads,
                "errors": sum(res["errors"] for res in results.values()),
                "accepted": accepted,
                "pushed": pushed,
                "pushed_all": pushed == accepted,
                "loadavg": _loadavg(),
            }
        )
        print(json.dumps(out))
    finally:
        r.flushdb()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
