"""Where a trivial job's time goes: `prosaas worker --burst` draining N acme_echo jobs, under
cProfile, with every Redis command and PostgreSQL statement of the worker process counted.

    python bench/_profile_worker.py [--jobs N] [--top K] [--out FILE.prof] [--rq-plain]

``--rq-plain``: the same for plain RQ (``rq worker --burst -w SimpleWorker``, bench/_peer_tasks.py's
echo, no database), to tell what RQ costs per job from what prosaas adds.

A helper for whoever works on the hot path, not a benchmark (no baseline; `make bench` skips
it). Redis is a private ``redis-server`` on a spare port (so ``INFO commandstats`` counts the
worker's commands alone, none of the other users of the shared server); PostgreSQL is
$PROSAAS_TEST_PG, in a fresh database. Prints, per job: Redis round trips (pipelines count
once) and commands by name, PostgreSQL round trips by statement, then cProfile's top functions.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis
from sqlalchemy import create_engine, text

HERE = Path(__file__).resolve().parent
PG = os.environ.get("PROSAAS_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432")

#: run in the worker process: count at the drivers, then run the CLI under cProfile
WRAPPER = r"""
import atexit, collections, cProfile, json, re, sys
import psycopg2.extensions as ext, redis.connection as rc
sql = collections.Counter(); rtrips = collections.Counter()
real_execute = ext.cursor.execute
class Cursor(ext.cursor):
    def execute(self, query, vars=None):
        q = query.decode() if isinstance(query, bytes) else str(query)
        if not self.connection.autocommit and self.connection.status == ext.STATUS_READY:
            sql["BEGIN (implicit)"] += 1
        sql[re.sub(r"\s+", " ", q).strip()[:90]] += 1
        return super().execute(query, vars)
class Conn(ext.connection):
    def cursor(self, *a, **k):
        k.setdefault("cursor_factory", Cursor); return super().cursor(*a, **k)
    def commit(self):
        if self.status != ext.STATUS_READY: sql["COMMIT"] += 1
        return super().commit()
    def rollback(self):
        if self.status != ext.STATUS_READY: sql["ROLLBACK"] += 1
        return super().rollback()
import psycopg2
_connect = psycopg2.connect
def connect(*a, **k):
    k.setdefault("connection_factory", Conn); return _connect(*a, **k)
psycopg2.connect = connect
Base = getattr(rc, "AbstractConnection", rc.Connection)  # redis-py 5+: every connection class
_send = Base.send_packed_command
def send(self, command, check_health=True):
    rtrips["sends"] += 1
    return _send(self, command, check_health)
Base.send_packed_command = send
def dump():
    with open(OUT, "w") as f:
        json.dump({"sql": sql, "redis_sends": rtrips["sends"]}, f)
atexit.register(dump)
sys.argv = ARGV
if ARGV[0] == "rq":
    from rq.cli.cli import main
else:
    from prosaas_core.cli.main import main
prof = cProfile.Profile()
try:
    prof.runcall(main)
except SystemExit:
    pass
finally:
    prof.dump_stats(PROF)
    dump()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--out", default=None, help="keep the cProfile stats in this file")
    ap.add_argument("--rq-plain", action="store_true", help="profile plain RQ instead")
    args = ap.parse_args()
    binary = shutil.which("redis-server")
    if not binary:
        sys.exit("redis-server not found on PATH (a private Redis counts the worker alone)")
    tmp = Path(tempfile.mkdtemp(prefix="prosaas-profile-"))
    port = free_port()
    rs = subprocess.Popen(
        [binary, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(tmp)],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    r = redis.Redis.from_url(url)
    for _ in range(100):
        try:
            r.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    db = f"prosaas_profile_{uuid.uuid4().hex[:8]}"
    admin = create_engine(f"{PG}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{db}"'))
    try:
        from prosaas_core import migrate
        from prosaas_core.jobs.enqueue import enqueue
        from prosaas_core.models import Business
        from prosaas_core.runtime import Runtime
        from prosaas_core.settings import Settings

        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PROSAAS_")},
            "DATABASE_URL": f"{PG}/{db}".replace("+psycopg2", ""),
            "REDIS_URL": url,
            "PROSAAS_SHUTDOWN_TIMEOUT": "5",
        }
        rt = Runtime(Settings.from_env(env))
        migrate.upgrade(rt)
        env["PROSAAS_DISABLE_SERVICES"] = ",".join(rt.registry.services)
        with rt.session() as s:
            b = Business(name="profile")
            s.add(b)
            s.flush()
            bid = b.id
        argv = ["prosaas", "worker", "--burst", "--queues", "default"]
        if args.rq_plain:
            from rq import Queue

            q = Queue("peers", connection=r)
            for i in range(args.jobs):
                q.enqueue("_peer_tasks.echo", f"m{i}")
            argv = ["rq", "worker", "--burst", "-w", "rq.worker.SimpleWorker", "--url", url]
            argv.append("peers")
            env["PYTHONPATH"] = str(HERE)
        else:
            for i in range(args.jobs):
                enqueue(rt, "acme_echo", bid, {"message": f"m{i}"})
        r.config_resetstat()
        counts, prof = tmp / "counts.json", Path(args.out or tmp / "worker.prof").absolute()
        code = f"OUT = {str(counts)!r}; PROF = {str(prof)!r}; ARGV = {argv!r}\n" + WRAPPER
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=1800
        )
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(f"worker failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        stats = r.info("commandstats")
        with rt.engine.connect() as c:
            done = c.execute(
                text("SELECT count(*) FROM background_jobs WHERE status = 'succeeded'")
            ).scalar()
        if args.rq_plain:  # RQ keeps its results: count the finished registry instead
            from rq.registry import FinishedJobRegistry

            done = FinishedJobRegistry("peers", connection=r).count
        rt.close()
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        admin.dispose()
        rs.terminate()
        rs.wait()
    n = args.jobs
    data = json.loads(counts.read_text())
    cmds = {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()}
    redis_cmds = sum(cmds.values())
    print(f"{done}/{n} jobs succeeded; worker wall {wall:.1f} s (start-up included)")
    print(
        f"Redis: {data['redis_sends'] / n:.2f} round trips/job, {redis_cmds / n:.2f} commands/job"
    )
    for name, calls in sorted(cmds.items(), key=lambda kv: -kv[1]):
        if calls / n >= 0.05:
            print(f"  {calls / n:6.2f}  {name}")
    pg_total = sum(data["sql"].values())
    print(f"PostgreSQL: {pg_total / n:.2f} round trips/job")
    for stmt, calls in sorted(data["sql"].items(), key=lambda kv: -kv[1]):
        if calls / n >= 0.05:
            print(f"  {calls / n:6.2f}  {stmt}")
    print(f"\ncProfile, top {args.top} by own time (tottime):")
    ps = pstats.Stats(str(prof))
    ps.sort_stats("tottime").print_stats(args.top)
    print(f"cProfile, top {args.top} by cumulative time:")
    ps.sort_stats("cumulative").print_stats(args.top)
    print(
        json.dumps(
            {
                "system": "rq_plain" if args.rq_plain else "prosaas",
                "jobs": n,
                "succeeded": done,
                "worker_wall_s": round(wall, 2),
                "redis_round_trips_per_job": round(data["redis_sends"] / n, 2),
                "redis_commands_per_job": round(redis_cmds / n, 2),
                "redis_commands": {k: round(v / n, 2) for k, v in cmds.items() if v / n >= 0.05},
                "pg_round_trips_per_job": round(pg_total / n, 2),
                "loadavg": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
            }
        )
    )
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
