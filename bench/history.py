"""Benchmark: the operational queries as background_jobs grows, its size, and HOT updates.

For each size (0 and 1,000,000 finished rows with --quick; 0, 1,000,000 and 5,000,000
otherwise: 200 businesses, 90 days, realistic payloads, generated in SQL, with a few hundred
active jobs and a small business of 20 jobs), on a database at the head schema whose history
task has run (rolled up), the median time of (every size kept, timed round-robin, so each
size runs under the same load):

- ``GET /metrics`` (every collector; the Flask app in this process),
- ``GET /api/jobs`` for the small business, and with ``?status=queued``,
- ``jobs list`` (default) and ``jobs list --business <small>``,
- one sweeper pass, ``doctor``'s checks, the constraint plan of a ``db upgrade`` that removes
  a type,
- the dashboard's History JSON for the small business (``/dashboard/api/history?business=``),
  and for every business (``dashboard_history_all``: reported, not in ``growth``; it reads the
  rollups of 30 days x every business, so it grows with businesses and days of history, not
  with jobs, and the 0-row baseline has none).

``growth_worst`` is the worst ratio of an operation's time at the largest size to its time at
0 rows (the baseline of the same run; target <= 1.5). ``bytes_per_finished_job``: the table's
total size (heap, TOAST, indexes) per finished row at the largest size.

``hot_update_ratio``: a checkpointing job (claim, 50 checkpoints with progress, finish; the
worker's own statements from ``prosaas_core.jobs.store``) while other jobs are enqueued
between its writes, measured as ``n_tup_hot_upd / n_tup_upd``; once on the schema before
this change (``0005_admin_tokens``: fillfactor 100) and once at the head, in the same run.

    python bench/history.py [--quick]

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
import uuid

import psycopg2
from sqlalchemy import create_engine, text

from prosaas_core import migrate
from prosaas_core.plugins import get_plugin_manager
from prosaas_core.runtime import Runtime
from prosaas_core.settings import Settings

SERVER = os.environ.get("PROSAAS_BENCH_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432")
REDIS = os.environ.get("PROSAAS_BENCH_REDIS", "redis://127.0.0.1:6379/7")
TYPES = ("acme_echo", "acme_sleep", "delete_leads", "broadcast")

GENERATE = """
WITH big AS (SELECT array_agg(id ORDER BY id) AS ids FROM businesses WHERE name LIKE 'big-%%')
INSERT INTO background_jobs (business_id, job_type, queue, status, payload, result, attempts,
    processed, total, created_at, updated_at, started_at, finished_at, heartbeat_at, worker)
SELECT big.ids[1 + g %% 200], (ARRAY['acme_echo', 'acme_sleep', 'delete_leads',
    'broadcast'])[1 + (g / 7) %% 4], 'default',
    CASE WHEN g %% 20 = 0 THEN 'failed' WHEN g %% 50 = 1 THEN 'cancelled' ELSE 'succeeded' END,
    jsonb_build_object('lead_ids', jsonb_build_array(g, g + 1, g + 2, g + 3),
                       'filter', jsonb_build_object('status', 'new', 'source', 'import'),
                       'note', md5(g::text)),
    jsonb_build_object('deleted', g %% 100, 'skipped', 0), 1, 100, 100,
    t - interval '3 seconds', t, t - interval '2 seconds', t, t, 'host-1:123'
FROM big, generate_series(%(lo)s, %(hi)s) g,
     LATERAL (SELECT now() - interval '10 minutes' - (g %% 1000000) * interval '7.776 seconds'
              AS t) x
"""


def _db() -> tuple[str, str]:
    name = f"prosaas_bench_hist_{uuid.uuid4().hex[:8]}"
    admin = create_engine(f"{SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return f"{SERVER}/{name}", name


def _drop(name: str) -> None:
    admin = create_engine(f"{SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _runtime(url: str) -> Runtime:
    env = {"DATABASE_URL": url, "REDIS_URL": REDIS}
    return Runtime(Settings.from_env(env), pm=get_plugin_manager(load_entrypoints=True))


def load(url: str, rows: int) -> None:
    """`rows` finished jobs for 200 businesses, 350 active ones; indexes built after the load."""
    raw = psycopg2.connect(url.replace("+psycopg2", ""))
    raw.autocommit = True
    with raw.cursor() as cur:
        cur.execute(
            "INSERT INTO businesses (name) SELECT 'big-' || g FROM generate_series(1, 200) g"
        )
        cur.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'background_jobs'"
            " AND indexname <> 'pk_background_jobs'"
        )
        indexes = cur.fetchall()
        cur.execute("SET maintenance_work_mem = '256MB'")
        for name, _ in indexes:
            cur.execute(f"DROP INDEX {name}")
        step = 1_000_000
        for lo in range(1, rows + 1, step):
            cur.execute(GENERATE, {"lo": lo, "hi": min(lo + step - 1, rows)})
        for _, definition in indexes:
            cur.execute(definition)
        cur.execute(
            "INSERT INTO background_jobs (business_id, job_type, status, payload, worker,"
            " heartbeat_at) SELECT b.id, 'acme_echo', CASE WHEN g % 7 = 0 THEN 'running'"
            " ELSE 'queued' END, '{}', 'host-1:123', now() FROM generate_series(1, 350) g"
            " JOIN businesses b ON b.name = 'big-' || (1 + g % 200)"
        )
        cur.execute("VACUUM ANALYZE background_jobs")
    raw.close()


#: timed and reported, but not in growth: it grows with the rollups (days x businesses x types
#: x statuses that had jobs), which the 0-row baseline does not have, then stays flat
UNBOUNDED_BY_ROWS = "dashboard_history_all"


def _dashboard_client(rt: Runtime):
    """A Flask test client signed in to the dashboard with a new operator token."""
    import re

    from prosaas_core.api.app import create_app
    from prosaas_core.tokens import create_admin_token

    with rt.session() as s:
        token = create_admin_token(s, "bench")[0]
    client = create_app(runtime=rt).test_client()
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/dashboard/login").text)
    assert csrf is not None
    client.post("/dashboard/login", data={"csrf": csrf.group(1), "token": token})
    return client


def build(rows: int) -> dict:
    """A database of `rows` finished jobs, rolled up, with the operations to time on it."""
    from prosaas_core.api.app import create_app
    from prosaas_core.cli.doctor import diagnose
    from prosaas_core.jobs import control
    from prosaas_core.jobs.history import roll_up
    from prosaas_core.jobs.sweeper import sweep
    from prosaas_core.migrate.constraint import make_plan, read_state
    from prosaas_core.testing import bearer, business_with_token

    url, name = _db()
    rt = _runtime(url)
    try:
        migrate.upgrade(rt)
        small, token = business_with_token(rt, "small")
        with rt.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO background_jobs (business_id, job_type, status, payload,"
                    " started_at, finished_at) SELECT :b, 'acme_echo', CASE WHEN g <= 5 THEN"
                    " 'queued' ELSE 'succeeded' END, '{}', now() - interval '1 hour',"
                    " now() - interval '1 hour' FROM generate_series(1, 20) g"
                ),
                {"b": small},
            )
        t = time.monotonic()
        load(url, rows)
        loaded = time.monotonic() - t
        t = time.monotonic()
        roll_up(rt)
        rolled = time.monotonic() - t
        client = create_app(runtime=rt).test_client()
        h = bearer(token)
        ops_client = _dashboard_client(rt)
        installed = set(rt.registry.job_types)

        def plan() -> None:
            with rt.engine.connect() as conn:
                make_plan(conn, installed - {"acme_sleep"}, read_state(conn))

        ops = {
            "metrics": lambda: client.get("/metrics"),
            "api_jobs_small": lambda: client.get("/api/jobs", headers=h),
            "api_jobs_small_queued": lambda: client.get("/api/jobs?status=queued", headers=h),
            "jobs_list": lambda: control.list_jobs(rt),
            "jobs_list_small": lambda: control.list_jobs(rt, business_id=small),
            "sweep": lambda: sweep(rt, leases=False),
            "doctor": lambda: diagnose(rt),
            "constraint_plan_remove_type": plan,
            "dashboard_history_small": lambda: ops_client.get(
                f"/dashboard/api/history?business={small}"
            ),
            # reads the rollups of 30 days x every business: bounded by businesses, not jobs
            UNBOUNDED_BY_ROWS: lambda: ops_client.get("/dashboard/api/history"),
        }
        with rt.engine.connect() as conn:
            size = conn.execute(text("SELECT pg_total_relation_size('background_jobs')")).scalar()
            heap = conn.execute(text("SELECT pg_relation_size('background_jobs')")).scalar()
            idx = conn.execute(text("SELECT pg_indexes_size('background_jobs')")).scalar()
            per_index = dict(
                conn.execute(
                    text(
                        "SELECT indexrelname, pg_relation_size(indexrelid) FROM"
                        " pg_stat_user_indexes WHERE relname = 'background_jobs'"
                    )
                ).all()
            )
        return {
            "rows": rows,
            "ops": ops,
            "rt": rt,
            "name": name,
            "load_s": round(loaded, 1),
            "rollup_s": round(rolled, 1),
            "table_bytes": size,
            "heap_bytes": heap,
            "index_bytes": idx,
            "index_bytes_each": per_index,
        }
    except BaseException:
        rt.close()
        _drop(name)
        raise


def time_all(built: list[dict], reps: int = 9) -> None:
    """Time every operation on every size round-robin, so that each size sees the same load
    on this shared machine; the median of `reps` per size and operation."""
    samples: dict[tuple[int, str], list[float]] = {}
    for b in built:
        for fn in b["ops"].values():
            fn()  # warm
    for _ in range(reps):
        for b in built:
            for op, fn in b["ops"].items():
                t = time.perf_counter()
                fn()
                samples.setdefault((b["rows"], op), []).append((time.perf_counter() - t) * 1e3)
    for b in built:
        b["ms"] = {op: round(statistics.median(samples[(b["rows"], op)]), 2) for op in b["ops"]}


def hot_ratio(target: str | None, checkpoints: int = 50, jobs: int = 40) -> float:
    """n_tup_hot_upd / n_tup_upd for checkpointing jobs on the schema at `target` (None:
    head), with another job enqueued between two of its writes."""
    from alembic import command

    from prosaas_core.jobs import store
    from prosaas_core.migrate.alembic_ops import alembic_config

    url, name = _db()
    rt = _runtime(url)
    try:
        if target is None:
            migrate.upgrade(rt)
        else:
            dirs = rt.registry.migration_dirs()
            with rt.engine.connect() as conn:
                command.upgrade(alembic_config(dirs, conn), target)
                conn.commit()
        raw = psycopg2.connect(url.replace("+psycopg2", ""))
        raw.autocommit = True
        cur = raw.cursor()
        cur.execute("INSERT INTO businesses (name) VALUES ('hot') RETURNING id")
        business = cur.fetchone()[0]
        payload = json.dumps({"lead_ids": list(range(40)), "note": "x" * 200})
        enqueue = (
            "INSERT INTO background_jobs (business_id, job_type, queue, status, payload)"
            " VALUES (%s, 'acme_echo', 'default', 'queued', %s) RETURNING id"
        )
        # a table with history before the measured jobs
        cur.execute(
            "INSERT INTO background_jobs (business_id, job_type, status, payload, finished_at)"
            " SELECT %s, 'acme_echo', 'succeeded', %s::jsonb, now()"
            " FROM generate_series(1, 20000)",
            (business, payload),
        )
        cur.execute("VACUUM ANALYZE background_jobs")
        cur.execute("SELECT pg_stat_reset()")
        for _ in range(jobs):
            cur.execute(enqueue, (business, payload))
            job_id = cur.fetchone()[0]
            claim = store.claim(cur, job_id, "bench:1")
            for i in range(checkpoints):
                cur.execute(enqueue, (business, payload))  # the others go on enqueueing
                store.touch(
                    cur, job_id, claim.fence, processed=i, total=checkpoints,
                    state={"cursor": i, "done": list(range(i % 10))}, set_state=True,
                )  # fmt: skip
            store.finish(cur, job_id, claim.fence, "succeeded", result={"n": checkpoints})
        cur.execute("SELECT pg_stat_force_next_flush()")
        raw.close()
        time.sleep(1.5)
        with rt.engine.connect() as conn:
            upd, hot = conn.execute(
                text(
                    "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables"
                    " WHERE relname = 'background_jobs'"
                )
            ).one()
        return round(hot / upd, 3) if upd else 0.0
    finally:
        rt.close()
        _drop(name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="0 and 1,000,000 rows only")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    sizes = [0, 1_000_000] if args.quick else [0, 1_000_000, 5_000_000]
    load_before = os.getloadavg()[0]
    results = []
    try:
        for n in sizes:
            results.append(build(n))
        time_all(results)
    finally:
        for r in results:
            r["rt"].close()
            _drop(r["name"])
    for r in results:
        print(f"{r['rows']:>9} rows: load {r['load_s']}s, rollup {r['rollup_s']}s, table"
              f" {r['table_bytes'] / 1e6:.1f} MB (heap {r['heap_bytes'] / 1e6:.1f}, indexes"
              f" {r['index_bytes'] / 1e6:.1f})")  # fmt: skip
        for op, ms in r["ms"].items():
            print(f"           {op:<30} {ms:>9.2f} ms")
    base, top = results[0], results[-1]
    growth = {
        op: round(top["ms"][op] / max(base["ms"][op], 0.01), 2)
        for op in base["ms"]
        if op != UNBOUNDED_BY_ROWS
    }
    worst = max(growth, key=growth.get)
    print(
        f"growth {top['rows']} rows / 0 rows: " + ", ".join(f"{k} {v}" for k, v in growth.items())
    )
    print(f"worst: {worst} x{growth[worst]} (target <= 1.5)")
    hot_before = hot_ratio("prosaas_core@0005_admin_tokens")
    hot_after = hot_ratio(None)
    print(f"HOT updates of a checkpointing job: before {hot_before:.1%}, after {hot_after:.1%}")
    per_job = (top["table_bytes"] - base["table_bytes"]) / max(top["rows"], 1)
    print(f"bytes per finished job: {per_job:.0f}")
    print(
        json.dumps(
            {
                "metrics_ms_by_rows": {str(r["rows"]): r["ms"]["metrics"] for r in results},
                "list_small_business_ms_by_rows": {
                    str(r["rows"]): r["ms"]["api_jobs_small"] for r in results
                },
                "ms_by_rows": {str(r["rows"]): r["ms"] for r in results},
                "dashboard_history_all_ms_by_rows": {
                    str(r["rows"]): r["ms"][UNBOUNDED_BY_ROWS] for r in results
                },
                "growth": growth,
                "growth_worst": growth[worst],
                "growth_worst_operation": worst,
                "hot_update_ratio": hot_after,
                "hot_update_ratio_before": hot_before,
                "bytes_per_finished_job": round(per_job),
                "index_bytes_each": top["index_bytes_each"],
                "table_bytes_by_rows": {str(r["rows"]): r["table_bytes"] for r in results},
                "quick": args.quick,
                "load_average_start_end": [load_before, os.getloadavg()[0]],
            }
        )
    )


if __name__ == "__main__":
    main()
