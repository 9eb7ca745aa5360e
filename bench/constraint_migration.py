"""Benchmark: changing the job-type set on a big background_jobs table with a live writer.

Two ways, in the same run, on the same table (2,000,000 rows; --quick: 200,000):

- prosaas: ``prosaas_core.migrate.upgrade`` (DROP + ADD ... NOT VALID in one short transaction
  under lock_timeout, then VALIDATE CONSTRAINT on its own, which writers do not wait for);
- naive: DROP + ADD validated, in one transaction (the table is scanned under ACCESS EXCLUSIVE).

A writer thread inserts one row at a time throughout. For each way: total time, and the longest
time one INSERT took while the change ran (the writer's idle maximum is printed as a baseline).
For prosaas also the longest INSERT overlapping the swap (from the "Dropping old chk_job_type"
log line to the "Validating" one): the only moment the ACCESS EXCLUSIVE lock can hold writers;
outside it an INSERT is only as slow as the machine is (VALIDATE's scan competes for the CPU).
Target: prosaas blocks the writer < 100 ms and at least 10x less than naive (issue #15: < 10 ms).

    python bench/constraint_migration.py [--quick] [--rows N]

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import threading
import time
import types
import uuid

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from prosaas_core import JobType, hookimpl, migrate
from prosaas_core.plugins import get_plugin_manager
from prosaas_core.runtime import Runtime
from prosaas_core.settings import Settings

SERVER = os.environ.get("PROSAAS_BENCH_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432")
BASE_TYPES = ["delete_leads", "update_leads", "delete_receipts_all", "broadcast"]


def _noop(ctx):
    return None


def plugin_with(types_: list[str]) -> types.ModuleType:
    mod = types.ModuleType("bench_plugin")

    @hookimpl
    def prosaas_job_types():
        return [JobType(t, _noop) for t in types_]

    mod.prosaas_job_types = prosaas_job_types
    return mod


def runtime_for(url: str, types_: list[str]) -> Runtime:
    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(plugin_with(types_), name="bench")
    return Runtime(Settings.from_env({"DATABASE_URL": url}), pm=pm)


class Marks(logging.Handler):
    """When the migration's log lines were emitted (monotonic seconds), by their text."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.at: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        for key in ("Dropping old chk_job_type", "Validating chk_job_type"):
            if key in message:
                self.at[key] = time.monotonic()


class Writer(threading.Thread):
    """Inserts one job row at a time, recording (start, seconds) of every INSERT."""

    def __init__(self, url: str, business_id: int) -> None:
        super().__init__(daemon=True)
        self.engine = create_engine(url, poolclass=NullPool)
        self.business_id = business_id
        self.samples: list[tuple[float, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with self.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            stmt = text(
                "INSERT INTO background_jobs (business_id, job_type) VALUES (:b, 'delete_leads')"
            )
            while not self.stop.is_set():
                t0 = time.monotonic()
                conn.execute(stmt, {"b": self.business_id})
                self.samples.append((t0, time.monotonic() - t0))
                time.sleep(0.002)

    def max_wait_ms(self, start: float, end: float) -> float:
        """Longest INSERT that overlapped [start, end]."""
        waits = [d for t0, d in self.samples if t0 <= end and t0 + d >= start]
        return max(waits, default=0.0) * 1000


def fill(engine, rows: int) -> int:
    with engine.begin() as conn:
        bid = conn.execute(text("INSERT INTO businesses (name) VALUES ('bench') RETURNING id"))
        bid = bid.scalar_one()
        conn.execute(
            text(
                "INSERT INTO background_jobs (business_id, job_type, status)"
                " SELECT :b, (ARRAY['delete_leads','update_leads','delete_receipts_all',"
                "'broadcast'])[1 + g % 4], 'succeeded'"
                " FROM generate_series(1, :n) g"
            ),
            {"b": bid, "n": rows},
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE background_jobs"))
        conn.execute(text("CHECKPOINT"))  # keep the fill's write-back out of the measurements
    return bid


def naive_change(engine, allowed: list[str]) -> None:
    values = ", ".join(f"'{t}'" for t in sorted(allowed))
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE background_jobs DROP CONSTRAINT chk_job_type"))
        conn.execute(
            text(
                "ALTER TABLE background_jobs ADD CONSTRAINT chk_job_type"
                f" CHECK (job_type IN ({values}))"
            )
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="200,000 rows instead of 2,000,000")
    ap.add_argument("--rows", type=int, default=None)
    args = ap.parse_args()
    rows = args.rows or (200_000 if args.quick else 2_000_000)
    logging.basicConfig(level=logging.WARNING)

    name = f"prosaas_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(f"{SERVER}/postgres", isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = f"{SERVER}/{name}"
    engine = create_engine(url, poolclass=NullPool)
    try:
        rt = runtime_for(url, BASE_TYPES)
        migrate.upgrade(rt)
        t0 = time.monotonic()
        bid = fill(engine, rows)
        print(f"table: {rows:,} rows in background_jobs (filled in {time.monotonic() - t0:.1f}s)")

        writer = Writer(url, bid)
        writer.start()
        time.sleep(1.0)
        idle = (time.monotonic(), time.monotonic() + 1.0)
        time.sleep(1.0)

        rt2 = runtime_for(url, [*BASE_TYPES, "enqueue_outbound_calls"])
        marks = Marks()
        migrate_log = logging.getLogger("prosaas.migrate")
        migrate_log.addHandler(marks)
        migrate_log.setLevel(logging.INFO)  # for the marks only: not printed
        migrate_log.propagate = False
        start = time.monotonic()
        result = migrate.upgrade(rt2)
        end = time.monotonic()
        migrate_log.removeHandler(marks)
        migrate_log.propagate = True
        swap_window = (marks.at["Dropping old chk_job_type"], marks.at["Validating chk_job_type"])
        assert result.migration is not None and "enqueue_outbound_calls" in result.added
        prosaas_window = (start, end)
        time.sleep(0.5)

        start = time.monotonic()
        naive_change(engine, [*BASE_TYPES, "enqueue_outbound_calls", "naive_extra"])
        end = time.monotonic()
        naive_window = (start, end)
        time.sleep(0.3)
        # Only now: an INSERT blocked by a change is recorded when it finally completes.
        writer.stop.set()
        writer.join()
        idle_ms = writer.max_wait_ms(*idle)
        prosaas_total, prosaas_ms = (
            prosaas_window[1] - prosaas_window[0],
            writer.max_wait_ms(*prosaas_window),
        )
        swap_ms = writer.max_wait_ms(*swap_window)
        naive_total, naive_ms = naive_window[1] - naive_window[0], writer.max_wait_ms(*naive_window)
        rt.close()
        rt2.close()
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    ratio = naive_ms / prosaas_ms if prosaas_ms else float("inf")
    print(f"writer idle baseline: longest INSERT {idle_ms:.1f} ms")
    print(
        f"prosaas (NOT VALID + VALIDATE): total {prosaas_total:.2f}s, longest INSERT wait "
        f"{prosaas_ms:.1f} ms ({swap_ms:.1f} ms during the swap, the only lock writers wait for)"
    )
    print(
        f"naive (DROP + ADD validated):  total {naive_total:.2f}s, longest INSERT wait "
        f"{naive_ms:.1f} ms"
    )
    print(
        f"prosaas blocks the writer {ratio:.0f}x less; target < 100 ms and >= 10x: "
        f"{'met' if prosaas_ms < 100 and ratio >= 10 else 'NOT met'}"
    )
    print(
        json.dumps(
            {
                "rows": rows,
                "writer_inserts": len(writer.samples),
                "idle_max_block_ms": round(idle_ms, 1),
                "prosaas_total_s": round(prosaas_total, 3),
                "prosaas_max_block_ms": round(prosaas_ms, 1),
                "prosaas_swap_block_ms": round(swap_ms, 1),
                "naive_total_s": round(naive_total, 3),
                "naive_max_block_ms": round(naive_ms, 1),
                "ratio": round(ratio, 1),
                "loadavg": " ".join(open("/proc/loadavg").read().split()[:3]),
            }
        )
    )


if __name__ == "__main__":
    main()
