"""Benchmark: the delete_leads and update_leads jobs against their baselines, on PostgreSQL.

400,000 leads over 4 businesses, interleaved (business = id mod 4), plus one call per 20 leads
(so ON DELETE SET NULL does its real work). For one business's 100,000 leads, three ways each:

- the job, through ``prosaas worker --burst`` (rows/s from the job row's started/finished times;
  the longest transaction is the handler's own measure, ``result.max_txn_ms``);
- a hand-written keyset loop running the job's own statements (prosaas_core/leads.py) at the
  same batch size (the job's mean one: the job sizes its batches to ~50 ms transactions unless
  ``--batch N`` fixes the size for both): the extent once
  (``SELECT count(*), max(id) ... WHERE business_id=:b``), then per batch the page
  (``SELECT count(*), max(id) FROM (SELECT id ... WHERE business_id=:b AND id > :last AND
  id <= :upto ORDER BY id LIMIT :n)``) and the write over its range
  (``DELETE|UPDATE ... WHERE business_id=:b AND id > :last AND id <= :hi``), commit per batch.
  So ``*_vs_keyset`` is the framework's cost alone (claim, checkpoint, progress, heartbeat),
  against what the job saves: it runs autocommit, its write and checkpoint as one statement
  (``ctx.checkpoint_write``), 2 round trips per batch where this loop takes 4, and its batches
  commit without waiting for the disk (safe for the job only: a batch lost in a database crash
  is lost with its checkpoint and redone; this loop, with no checkpoint, waits as a hand-written
  loop does). ``*_vs_keyset_nowait`` compares with the same loop not waiting either
  (``synchronous_commit`` off for its session): the framework's cost with that saving taken out;
- one single ``DELETE|UPDATE ... WHERE business_id=:b``: the physical limit.

Every run starts from the same reloaded, vacuumed table (autovacuum off on it, so none starts
in the middle of a run); each way runs ``--repeat`` times, interleaved with the others, and its
best rate is kept (and its worst transaction over all runs);
``*_vs_keyset_median`` is the median of the rounds' own ratios (each round runs the ways back to
back, so a slow stretch of the machine weighs on both sides of its ratio alike).
The worker's peak RSS (wait4) is measured for the full jobs and for a job over a tenth of the
rows: flat memory means the two match. ``--quick``: 40,000 leads. ``--sweep 250,1000,...``:
delete-job rows/s per fixed batch size. The last line printed
is one JSON object.

    python bench/bulk_leads.py [--quick] [--batch N] [--sweep SIZES]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg2
import redis

PG = os.environ.get("PROSAAS_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
REDIS = os.environ.get("PROSAAS_BENCH_REDIS", "redis://127.0.0.1:6379/4")
PROSAAS = str(Path(sys.executable).with_name("prosaas"))
BUSINESSES = 4
SET = {"status": "contacted", "owner": "bench"}


class Bench:
    def __init__(self, rows: int, batch: int | None) -> None:
        self.rows = rows
        self.db = f"prosaas_bench_{uuid.uuid4().hex[:8]}"
        self.url = f"{PG}/{self.db}"
        admin = psycopg2.connect(f"{PG}/postgres")
        admin.autocommit = True
        admin.cursor().execute(f'CREATE DATABASE "{self.db}"')
        admin.close()
        self.conn = psycopg2.connect(self.url, application_name="bench")
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PROSAAS_")},
            "DATABASE_URL": self.url,
            "REDIS_URL": REDIS,
        }
        if batch:  # a fixed size for the job too; otherwise it sizes its batches itself
            self.env["PROSAAS_LEADS_BATCH_SIZE"] = str(batch)
        redis.Redis.from_url(REDIS).flushdb()

    def close(self) -> None:
        self.conn.close()
        admin = psycopg2.connect(f"{PG}/postgres")
        admin.autocommit = True
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')
        admin.close()

    # -- data ------------------------------------------------------------------------------

    def q(self, sql: str, *args, autocommit: bool = False):
        self.conn.autocommit = autocommit
        with self.conn.cursor() as cur:
            cur.execute(sql, args or None)
            rows = cur.fetchall() if cur.description else None
        if not autocommit:
            self.conn.commit()
        return rows

    def setup(self) -> None:
        subprocess.run([PROSAAS, "db", "upgrade"], env=self.env, check=True, capture_output=True)
        ids = [
            r[0]
            for r in self.q(
                "INSERT INTO businesses (name) SELECT 'bench ' || g "
                "FROM generate_series(1, %s) g RETURNING id",
                BUSINESSES,
            )
        ]
        self.target = ids[1]
        # interleaved: consecutive ids cycle through the businesses; one lead in ten of each
        # business has source 'tenth' (the small job that shows memory does not grow with rows)
        self.q(
            "INSERT INTO leads (business_id, name, phone, email, status, source, tags) "
            "SELECT (%s::bigint[])[1 + g %% 4], 'Lead ' || g, '+1555' || lpad(g::text, 7, '0'), "
            "'lead' || g || '@example.com', (ARRAY['new','open','won'])[1 + g %% 3], "
            "CASE WHEN (g / 4) %% 10 = 0 THEN 'tenth' ELSE 'web' END, '[\"a\"]'::jsonb "
            "FROM generate_series(0, %s - 1) g",
            ids,
            self.rows,
        )
        self.q(
            "INSERT INTO calls (business_id, call_sid, lead_id) "
            "SELECT business_id, 'CA' || id, id FROM leads WHERE id % 20 = 0"
        )
        # the runs' own VACUUM (reload) only: an autovacuum woken by a run's 100,000 dead rows
        # would race the run's last batches (or the next way's first), at random
        for table in ("leads", "calls"):
            self.q(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
        self.q("CREATE TABLE bench_leads AS SELECT * FROM leads")
        self.q("CREATE TABLE bench_calls AS SELECT * FROM calls")
        self.per_business = self.q("SELECT count(*) FROM leads WHERE business_id = %s", ids[1])[0][
            0
        ]

    def reload(self) -> None:
        self.q("TRUNCATE leads, calls, receipts CASCADE")  # plugins' tables reference leads
        self.q("INSERT INTO leads SELECT * FROM bench_leads")
        self.q("INSERT INTO calls SELECT * FROM bench_calls")
        self.q("VACUUM (ANALYZE) leads, calls", autocommit=True)
        self.q("CHECKPOINT", autocommit=True)

    def others_intact(self) -> bool:
        [(n,)] = self.q("SELECT count(*) FROM leads WHERE business_id <> %s", self.target)
        [(changed,)] = self.q(
            "SELECT count(*) FROM leads WHERE business_id <> %s AND owner IS NOT NULL",
            self.target,
        )
        return n == self.rows - self.per_business and changed == 0

    # -- the three ways ----------------------------------------------------------------------

    def job(self, job_type: str, payload: dict) -> dict:
        """Enqueue through prosaas, drain with `prosaas worker --burst`; rows/s, txn, RSS."""
        from prosaas_core.jobs.enqueue import enqueue
        from prosaas_core.runtime import Runtime
        from prosaas_core.settings import Settings

        rt = Runtime(Settings.from_env(self.env))
        try:
            services = ",".join(rt.registry.services)
            job_id = enqueue(rt, job_type, self.target, payload).id
        finally:
            rt.close()
        env = {**self.env, "PROSAAS_DISABLE_SERVICES": services}  # measure the job alone
        proc = subprocess.Popen(
            [PROSAAS, "worker", "--burst", "--queues", "maintenance"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        err = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)  # rusage of the worker and anything it forked
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            sys.exit(f"worker failed ({proc.returncode}):\n{err.decode()[-3000:]}")
        [(status_, result, started, finished)] = self.q(
            "SELECT status, result, started_at, finished_at FROM background_jobs WHERE id = %s",
            job_id,
        )
        if status_ != "succeeded":
            sys.exit(f"job {job_id} {status_}: {result}")
        seconds = (finished - started).total_seconds()
        n = result.get("deleted", result.get("updated"))
        return {
            "rows": n,
            "seconds": seconds,
            "rows_per_s": n / seconds,
            "max_txn_ms": result["max_txn_ms"],
            "batch": result["mean_batch_size"],
            "rss_mb": usage.ru_maxrss / 1024,
        }

    def keyset(self, kind: str, batch: int, *, wait: bool = True) -> dict:
        """The job's statements by hand at the job's batch size, commit per batch, without the
        framework around them (no claim, checkpoint, progress or heartbeat writes); with
        `wait` False its commits do not wait for the disk either, as the job's batches."""
        cur = self.conn.cursor()
        self.conn.autocommit = True
        cur.execute(f"SET synchronous_commit = {'on' if wait else 'off'}")
        self.conn.autocommit = False
        b = self.target
        total, longest = 0, 0.0
        began = time.perf_counter()
        # the extent, fixed once as the job does on its first attempt (LeadBatcher.start)
        cur.execute("SELECT count(*), coalesce(max(id), 0) FROM leads WHERE business_id = %s", (b,))
        _, upto = cur.fetchone()
        self.conn.commit()
        last = 0
        while True:
            t0 = time.perf_counter()
            # the page: its size and highest id in one round trip (LeadBatcher.next_batch)
            cur.execute(
                "SELECT count(*), max(id) FROM (SELECT id FROM leads WHERE business_id = %s "
                "AND id > %s AND id <= %s ORDER BY id LIMIT %s) page",
                (b, last, upto, batch),
            )
            n, hi = cur.fetchone()
            if not n:
                self.conn.commit()
                break
            # the write over the page's id range (Batch.where), as deleting()/updating() build it
            if kind == "delete":
                cur.execute(
                    "DELETE FROM leads WHERE business_id = %s AND id > %s AND id <= %s",
                    (b, last, hi),
                )
            else:
                cur.execute(
                    "UPDATE leads SET status = %s, owner = %s, updated_at = now() "
                    "WHERE business_id = %s AND id > %s AND id <= %s",
                    (SET["status"], SET["owner"], b, last, hi),
                )
            total += cur.rowcount
            self.conn.commit()
            longest = max(longest, (time.perf_counter() - t0) * 1000)
            last = hi
        seconds = time.perf_counter() - began
        self.conn.autocommit = True
        cur.execute("SET synchronous_commit = on")  # for the ways after this one
        return {
            "rows": total,
            "seconds": seconds,
            "rows_per_s": total / seconds,
            "max_txn_ms": longest,
        }

    def single(self, kind: str) -> dict:
        """One statement for the whole business: the physical limit (and one long transaction)."""
        cur = self.conn.cursor()
        self.conn.autocommit = False
        began = time.perf_counter()
        if kind == "delete":
            cur.execute("DELETE FROM leads WHERE business_id = %s", (self.target,))
        else:
            cur.execute(
                "UPDATE leads SET status = %s, owner = %s, updated_at = now() "
                "WHERE business_id = %s",
                (SET["status"], SET["owner"], self.target),
            )
        total = cur.rowcount
        self.conn.commit()
        seconds = time.perf_counter() - began
        return {
            "rows": total,
            "seconds": seconds,
            "rows_per_s": total / seconds,
            "max_txn_ms": seconds * 1000,
        }


def line(name: str, r: dict) -> None:
    extra = f"  batch {r['batch']}" if "batch" in r else ""
    extra += f"  worker peak RSS {r['rss_mb']:.0f} MB" if "rss_mb" in r else ""
    print(
        f"  {name:<14} {r['rows']:>8} rows in {r['seconds']:7.3f} s = {r['rows_per_s']:>9.0f} "
        f"rows/s  longest txn {r['max_txn_ms']:8.1f} ms{extra}",
        flush=True,
    )


def run(b: Bench, kind: str, repeat: int) -> dict:
    """Each way `repeat` times, interleaved (so load from elsewhere hits all three alike); the
    best rate of each way is kept, and each way's worst transaction (the job's largest RSS)."""
    job_type = "delete_leads" if kind == "delete" else "update_leads"
    payload = {"all": True} if kind == "delete" else {"all": True, "set": SET}
    out: dict[str, dict] = {}
    #: job ÷ keyset, round by round: the round's ways ran back to back, so drift cancels
    rounds: list[float] = []
    nowait: list[float] = []
    for _ in range(repeat):
        rates: dict[str, float] = {}
        for way in ("job", "keyset", "keyset_nowait", "single"):
            b.reload()
            if way == "job":
                r = b.job(job_type, payload)
                batch = r["batch"]  # the keyset loops run at the job's (mean) batch size
            elif way == "keyset":
                r = b.keyset(kind, batch)
            elif way == "keyset_nowait":
                r = b.keyset(kind, batch, wait=False)
            else:
                r = b.single(kind)
            assert r["rows"] == b.per_business, (way, r["rows"], b.per_business)
            assert b.others_intact(), f"{kind} {way} touched another business"
            line(f"{kind} {way}", r)
            rates[way] = r["rows_per_s"]
            best = out.get(way)
            if best is None or r["rows_per_s"] > best["rows_per_s"]:
                out[way] = {**r, "max_txn_ms": max(r["max_txn_ms"], (best or r)["max_txn_ms"])}
                if "rss_mb" in r:
                    out[way]["rss_mb"] = max(r["rss_mb"], (best or r)["rss_mb"])
            else:  # every way's worst transaction is kept, not only its best run's
                best["max_txn_ms"] = max(best["max_txn_ms"], r["max_txn_ms"])
                if "rss_mb" in r:
                    best["rss_mb"] = max(best["rss_mb"], r["rss_mb"])
        rounds.append(round(rates["job"] / rates["keyset"], 3))
        nowait.append(round(rates["job"] / rates["keyset_nowait"], 3))
    out["rounds"] = {"keyset": rounds, "keyset_nowait": nowait}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="40,000 leads instead of 400,000")
    ap.add_argument("--batch", type=int, default=None, help="batch size (default: the job's)")
    ap.add_argument("--sweep", default="", help="comma-separated batch sizes to compare")
    ap.add_argument(
        "--repeat", type=int, default=None, help="runs of each way (default 2; 1 quick)"
    )
    args = ap.parse_args()
    from prosaas_core.leads import DEFAULT_BATCH_SIZE, TARGET_TXN_MS

    rows = 40_000 if args.quick else 400_000
    b = Bench(rows, args.batch)
    try:
        b.setup()
        print(
            f"bulk_leads: {rows} leads over {BUSINESSES} businesses (interleaved), "
            f"{b.per_business} in the target business, batch size "
            f"{args.batch or f'adaptive (first {DEFAULT_BATCH_SIZE}, ~{TARGET_TXN_MS:.0f} ms)'}",
            flush=True,
        )
        if args.sweep:
            for size in [int(s) for s in args.sweep.split(",")]:
                b.env["PROSAAS_LEADS_BATCH_SIZE"] = str(size)
                b.reload()
                r = b.job("delete_leads", {"all": True})
                line(f"batch {size}", r)
            if args.batch:
                b.env["PROSAAS_LEADS_BATCH_SIZE"] = str(args.batch)
            else:
                b.env.pop("PROSAAS_LEADS_BATCH_SIZE")
        repeat = args.repeat or (1 if args.quick else 2)
        delete = run(b, "delete", repeat)
        update = run(b, "update", repeat)
        b.reload()
        small = b.job("update_leads", {"filter": {"source": "tenth"}, "set": SET})
        line("update tenth", small)
    finally:
        b.close()

    def ratio(kind: dict, base: str) -> float:
        return round(kind["job"]["rows_per_s"] / kind[base]["rows_per_s"], 3)

    summary = {
        "rows": rows,
        # the keyset loop runs the job's range predicate (was: WHERE id = ANY(ids) before)
        "keyset_baseline": "range",
        "delete_batch_size": delete["job"]["batch"],
        "update_batch_size": update["job"]["batch"],
        "delete_rows_per_s": round(delete["job"]["rows_per_s"]),
        "delete_keyset_rows_per_s": round(delete["keyset"]["rows_per_s"]),
        "delete_single_rows_per_s": round(delete["single"]["rows_per_s"]),
        "update_rows_per_s": round(update["job"]["rows_per_s"]),
        "update_keyset_rows_per_s": round(update["keyset"]["rows_per_s"]),
        "update_single_rows_per_s": round(update["single"]["rows_per_s"]),
        "delete_vs_keyset": ratio(delete, "keyset"),
        "delete_vs_single": ratio(delete, "single"),
        "update_vs_keyset": ratio(update, "keyset"),
        "update_vs_single": ratio(update, "single"),
        # the same ratios round by round (job ÷ baseline of that round), and their median
        "delete_vs_keyset_median": statistics.median(delete["rounds"]["keyset"]),
        "update_vs_keyset_median": statistics.median(update["rounds"]["keyset"]),
        "delete_vs_keyset_rounds": delete["rounds"]["keyset"],
        "update_vs_keyset_rounds": update["rounds"]["keyset"],
        # against the loop that does not wait for the disk either
        "delete_vs_keyset_nowait_median": statistics.median(delete["rounds"]["keyset_nowait"]),
        "update_vs_keyset_nowait_median": statistics.median(update["rounds"]["keyset_nowait"]),
        "max_txn_ms": max(delete["job"]["max_txn_ms"], update["job"]["max_txn_ms"]),
        "keyset_max_txn_ms": round(
            max(delete["keyset"]["max_txn_ms"], update["keyset"]["max_txn_ms"]), 1
        ),
        "single_txn_ms": round(
            max(delete["single"]["max_txn_ms"], update["single"]["max_txn_ms"]), 1
        ),
        "peak_rss_mb": round(max(delete["job"]["rss_mb"], update["job"]["rss_mb"]), 1),
        "peak_rss_mb_tenth_of_rows": round(small["rss_mb"], 1),
        "loadavg": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }
    print(
        f"ratios: delete {summary['delete_vs_keyset']}x keyset, {summary['delete_vs_single']}x "
        f"single; update {summary['update_vs_keyset']}x keyset, {summary['update_vs_single']}x "
        f"single (round by round, median: delete {summary['delete_vs_keyset_median']}x, update "
        f"{summary['update_vs_keyset_median']}x keyset; vs the loop not waiting for the disk "
        f"either: delete {summary['delete_vs_keyset_nowait_median']}x, update "
        f"{summary['update_vs_keyset_nowait_median']}x); longest job transaction "
        f"{summary['max_txn_ms']} ms; worker peak RSS "
        f"{summary['peak_rss_mb']} MB ({summary['peak_rss_mb_tenth_of_rows']} MB for a tenth)"
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
