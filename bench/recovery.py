"""Recovery times after faults, on a PostgreSQL and a Redis this benchmark starts itself.

- kill_to_resume_s: SIGKILL of the worker running a job -> the job running again on the other
  worker (its lease lapses, the sweeper rescues it). Baseline in the same run: the rescue the
  lease replaced, by stale job heartbeat, with the lease switched off (PROSAAS_LEASE_TTL=0)
  and the heartbeat settings scaled down (PROSAAS_HEARTBEAT_INTERVAL=2, PROSAAS_STALE_AFTER=6;
  the defaults are 30 and 90, which made it 91-103 s).
- redis_back_to_work_s: Redis restarted empty after jobs were accepted while it was down ->
  the first of them finished.
- pg_back_to_work_s: PostgreSQL restarted under a stream of short jobs -> the first job
  finished after it was back.

    python bench/recovery.py [--quick] [--repeat N]

Nothing touches the shared servers: PostgreSQL comes from initdb (as user postgres) and
redis-server on spare ports, both removed at the end. Last line: a JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from prosaas_core.testing import WorkerProcess, wait_until  # noqa: E402
from tests.faults.servers import PgServer, RedisServer  # noqa: E402


class World:
    def __init__(self, pg: PgServer, redis: RedisServer, tmp: Path) -> None:
        from prosaas_core import migrate
        from prosaas_core.db import make_engine
        from prosaas_core.models import Business
        from prosaas_core.plugins import get_plugin_manager
        from prosaas_core.runtime import Runtime
        from prosaas_core.settings import Settings

        self.pg, self.redis, self.tmp = pg, redis, tmp
        db = pg.create_database()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROSAAS_")}
        env.update(
            DATABASE_URL=pg.url(db),
            REDIS_URL=redis.url(),
            PYTHONUNBUFFERED="1",
            PROSAAS_DISABLE_SERVICES="acme-ticker,recording-worker",
        )
        self.env = env
        self.rt = Runtime(Settings.from_env(env), pm=get_plugin_manager(load_entrypoints=True))
        migrate.upgrade(self.rt)
        self.rt.__dict__["engine"] = make_engine(env["DATABASE_URL"], pool_pre_ping=True)
        with self.rt.session() as s:
            b = Business(name="bench")
            s.add(b)
            s.flush()
            self.business = b.id
        self.workers: list[WorkerProcess] = []

    def worker(self, *args: str, **extra: str) -> WorkerProcess:
        w = WorkerProcess(
            {**self.env, **extra}, *args, log_path=self.tmp / f"w{len(self.workers)}.log"
        )
        self.workers.append(w)
        return w

    def stop_workers(self) -> None:
        """Stop every worker and drop what is left, so one measurement never feeds the next."""
        from sqlalchemy import text

        for w in self.workers:
            w.kill()
        self.workers = []
        with self.rt.engine.begin() as c:
            c.execute(
                text(
                    "UPDATE background_jobs SET status = 'cancelled', finished_at = now() "
                    "WHERE status IN ('queued', 'running')"
                )
            )
            c.execute(text("DELETE FROM prosaas_worker_leases"))
        self.redis_client().flushall()

    def redis_client(self):
        import redis

        return redis.Redis.from_url(self.env["REDIS_URL"])

    def enqueue(self, job_type: str, payload: dict) -> int:
        from prosaas_core.jobs.enqueue import enqueue

        return enqueue(self.rt, job_type, self.business, payload).id

    def row(self, job_id: int) -> tuple:
        from sqlalchemy import text

        with self.rt.engine.connect() as c:
            return c.execute(
                text(
                    "SELECT status, attempts, worker, (state->>'next')::int, "
                    "extract(epoch from finished_at) FROM background_jobs WHERE id = :i"
                ),
                {"i": job_id},
            ).one()


def kill_to_resume(world: World, **settings: str) -> float:
    """Two workers; SIGKILL the one running the job; seconds until the other runs it."""
    workers = [world.worker("--queues", "acme", **settings) for _ in range(2)]
    for w in workers:
        w.wait_for_log("Listening on acme", 30)
    job = world.enqueue("acme_count", {"n": 100_000, "batch": 10, "sleep": 0.05})
    wait_until(lambda: (world.row(job)[3] or 0) >= 30, 30, "first checkpoints")
    pid = int(world.row(job)[2].split(".")[-2])
    victim = next(w for w in workers if w.pid == pid)
    killed = time.monotonic()
    victim.signal(signal.SIGKILL)
    wait_until(lambda: world.row(job)[:2] == ("running", 2), 120, "the job running again")
    took = time.monotonic() - killed
    world.stop_workers()
    return took


def redis_back_to_work(world: World) -> float:
    w = world.worker("--queues", "default")
    w.wait_for_log("Listening on default", 30)
    world.redis.kill()
    time.sleep(2)
    jobs = [world.enqueue("acme_echo", {"message": str(i)}) for i in range(5)]
    world.redis.start()
    back = time.monotonic()
    wait_until(lambda: any(world.row(j)[0] == "succeeded" for j in jobs), 60, "a job done")
    took = time.monotonic() - back
    world.stop_workers()
    return took


def pg_back_to_work(world: World) -> float:
    w = world.worker("--queues", "acme")
    w.wait_for_log("Listening on acme", 30)
    jobs = [world.enqueue("acme_count", {"n": 20, "batch": 5, "sleep": 0.05}) for _ in range(60)]
    wait_until(lambda: world.row(jobs[3])[0] == "succeeded", 60, "the stream flowing")
    world.pg.stop("fast")
    world.pg.start()
    back = time.time()
    t0 = time.monotonic()

    def finished_after() -> bool:
        return any((world.row(j)[4] or 0) > back for j in jobs)

    wait_until(finished_after, 60, "a job finished after the restart")
    took = time.monotonic() - t0
    world.stop_workers()
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="one round of each")
    ap.add_argument("--repeat", type=int, default=None, help="rounds of each (default 3)")
    args = ap.parse_args()
    rounds = args.repeat or (1 if args.quick else 3)

    redis = RedisServer().start()
    pg = PgServer().start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            world = World(pg, redis, Path(tmp))
            figures: dict[str, list[float]] = {
                "kill_to_resume_s": [],
                "baseline_stale_heartbeat_kill_to_resume_s": [],
                "redis_back_to_work_s": [],
                "pg_back_to_work_s": [],
            }
            for i in range(rounds):
                figures["kill_to_resume_s"].append(kill_to_resume(world))
                figures["baseline_stale_heartbeat_kill_to_resume_s"].append(
                    kill_to_resume(
                        world,
                        PROSAAS_LEASE_TTL="0",
                        PROSAAS_HEARTBEAT_INTERVAL="2",
                        PROSAAS_STALE_AFTER="6",
                        PROSAAS_SWEEP_INTERVAL="2",
                    )
                )
                figures["redis_back_to_work_s"].append(redis_back_to_work(world))
                figures["pg_back_to_work_s"].append(pg_back_to_work(world))
                print(
                    f"round {i + 1}: " + ", ".join(f"{k}={v[-1]:.2f}" for k, v in figures.items()),
                    flush=True,
                )
            world.rt.close()
    finally:
        pg.close()
        redis.close()
    summary: dict[str, object] = {k: round(statistics.median(v), 3) for k, v in figures.items()}
    summary.update({f"{k}_max": round(max(v), 3) for k, v in figures.items()})
    summary["rounds"] = rounds
    summary["targets_s"] = {"kill_to_resume_s": 10.0, "redis_back_to_work_s": 2.0}
    print(
        f"kill -> resume {summary['kill_to_resume_s']}s (stale-heartbeat baseline "
        f"{summary['baseline_stale_heartbeat_kill_to_resume_s']}s); Redis back -> work "
        f"{summary['redis_back_to_work_s']}s; PostgreSQL back -> work "
        f"{summary['pg_back_to_work_s']}s"
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
