"""Peers: the same trivial job drained by ONE worker process of prosaas and of each peer.

    python bench/peers.py [--quick] [--jobs N] [--rounds R] [--systems a,b,...]
                          [--kill-check] [--kill-window S]

Systems (one worker process each, in the same run, in interleaved rounds: every round runs
each system once, the order rotated by one per round, so drift in the machine's load is spread):

- ``prosaas``: ``prosaas worker --burst`` (SimpleWorker), acme_echo, a durable fenced row per
  job in PostgreSQL, RQ on Redis as the transport; plugin services disabled;
- ``rq_plain``: ``rq worker --burst -w SimpleWorker``, no database write at all;
- ``celery``: ``celery worker --pool solo``, Redis broker and Redis results, defaults otherwise;
- ``dramatiq``: ``dramatiq --processes 1 --threads 1``, Redis broker;
- ``procrastinate``: ``procrastinate worker --concurrency 1 --one-shot``, PostgreSQL only (its
  own schema in a fresh database), a row per job like prosaas;
- ``huey``: ``huey_consumer -w 1 -k thread``, RedisHuey.

The job is the same everywhere: return ``{"echo": message, "attempt": 1}`` (bench/_peer_tasks.py;
prosaas runs the acme plugin's acme_echo, which returns the same). All N jobs are enqueued one
by one through each system's client API first (the enqueue rate), then one worker drains them.
Drain rate = (N - 1) / (last finish - first finish): worker start-up and import time are not
counted for anyone. prosaas's finish times are its rows' ``finished_at``; the peers' are taken
in memory by the job and written once at the end (no I/O per job).

Peers come from requirements-bench.txt (``make bench-peers`` or ``.venv/bin/pip install -r
requirements-bench.txt``), never from the product's requirements; one that is not installed is
skipped, and the output says so. The durability column says what happens to a job whose worker
is SIGKILLed mid-job, from each peer's source and docs (read for the pinned version);
``--kill-check`` also measures it: each system's worker (its whole process group, as when a
container dies) is SIGKILLed while it runs a 1.5 s job, a fresh worker is started, and the job
either runs again within ``--kill-window`` seconds (default 20) or not. Timeouts that only delay a
redelivery are scaled down for that check and listed with it (prosaas: heartbeat 1 s, stale
after 4 s, sweep 1 s; Dramatiq: heartbeat_timeout 3 s); nothing else changes. prosaas's rescue
is also what its test suite checks (tests/test_sweeper.py and others).

Needs PostgreSQL ($PROSAAS_TEST_PG, default postgresql+psycopg2://postgres@127.0.0.1:5432) and
Redis ($BENCH_REDIS_URL, default redis://127.0.0.1:6379/15; FLUSHDB'd before every system's
run). The last line is one JSON object: per-system medians, ``vs_rq_plain``, ``vs_celery``,
``vs_dramatiq``, ``vs_procrastinate``, ``vs_huey`` (prosaas drain / peer drain, medians), the
skipped peers, the settings and the load average.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis
from sqlalchemy import create_engine, text

HERE = Path(__file__).resolve().parent
PROSAAS = str(Path(sys.executable).with_name("prosaas"))
PG = os.environ.get("PROSAAS_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
SYSTEMS = ("prosaas", "rq_plain", "celery", "dramatiq", "procrastinate", "huey")
#: the module each peer needs (a peer whose module is missing is skipped)
NEEDS = {
    "celery": "celery",
    "dramatiq": "dramatiq",
    "procrastinate": "procrastinate",
    "huey": "huey",
}
#: what happens to a running job when its worker is SIGKILLed, and where that comes from
DURABILITY = {
    "prosaas": (
        "rescued",
        "the row stays 'running'; the sweeper re-queues it (attempt + 1, from its last "
        "checkpoint) once its heartbeat is older than PROSAAS_STALE_AFTER (90 s); also checked "
        "by the test suite (tests/test_sweeper.py, tests/test_lead_plugins_e2e.py)",
    ),
    "rq_plain": (
        "lost (failed)",
        "stays in StartedJobRegistry until its heartbeat lapses, then cleanup moves it to "
        "FailedJobRegistry (AbandonedJobError); re-run only if enqueued with Retry; from "
        "rq/registry.py StartedJobRegistry.cleanup",
    ),
    "celery": (
        "lost",
        "acked on receipt by default (task_acks_late=False), so the running task is gone; "
        "prefetched unacked messages come back after visibility_timeout (1 h); with "
        "acks_late + reject_on_worker_lost it is redelivered; from celery/app/defaults.py and "
        "kombu/transport/redis.py",
    ),
    "dramatiq": (
        "redelivered",
        "acked after the actor returns; a dead worker's unacked messages are re-queued by "
        "another worker's maintenance once its heartbeat is older than heartbeat_timeout "
        "(60 s); from dramatiq/brokers/redis.py",
    ),
    "procrastinate": (
        "stuck until retried",
        "the row stays 'doing'; the dead worker is pruned after stalled_worker_timeout (30 s), "
        "but its job re-runs only if the application calls get_stalled_jobs + retry_job (a "
        "documented periodic-task recipe); from procrastinate/worker.py and manager.py",
    ),
    "huey": (
        "lost",
        "dequeue is BRPOP: the message leaves Redis when taken, there is no ack; from "
        "huey/storage.py RedisStorage.dequeue",
    ),
}


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def admin_exec(sql: str) -> None:
    admin = create_engine(f"{PG}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(sql))
    admin.dispose()


def create_db(prefix: str) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin_exec(f'CREATE DATABASE "{name}"')
    return name


def drop_db(name: str) -> None:
    admin_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def libpq_url(db: str) -> str:
    return f"{PG}/{db}".replace("+psycopg2", "")


class System:
    """One system: set up once, then per round enqueue N jobs, drain them with one worker
    process, and say when each job finished."""

    name = ""
    burst = False  # the worker exits by itself once the queue is empty

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def setup(self) -> None:  # noqa: B027 - most systems need none
        pass

    def teardown(self) -> None:  # noqa: B027
        pass

    def enqueue(self, n: int) -> None:
        raise NotImplementedError

    def command(self, forever: bool = False) -> list[str]:
        """The worker's command line; `forever`: without its burst/one-shot flag."""
        raise NotImplementedError

    def finish_times(self, out: Path, n: int) -> list[float]:
        """Unix times at which the round's jobs finished (peers: written by the job)."""
        return json.loads(out.read_text())

    # -- --kill-check ------------------------------------------------------------------------

    #: settings scaled down for --kill-check only, so a redelivery can show within the window
    kill_env: dict[str, str] = {}

    def enqueue_slow(self, marker: str, seconds: float) -> None:
        raise NotImplementedError

    def slow_state(self, marker: str) -> tuple[int, int]:
        """How many times the slow job has started and finished so far."""

        def lines(path: str) -> int:
            try:
                return len(Path(path).read_text().split())
            except FileNotFoundError:
                return 0

        return lines(f"{marker}.started"), lines(f"{marker}.done")


class Prosaas(System):
    name = "prosaas"
    burst = True

    def setup(self) -> None:
        from prosaas_core import migrate
        from prosaas_core.models import Business
        from prosaas_core.runtime import Runtime
        from prosaas_core.settings import Settings

        self.db = create_db("prosaas_bench_peers")
        self.env = {**self.env, "DATABASE_URL": libpq_url(self.db)}
        self.rt = Runtime(Settings.from_env(self.env))
        migrate.upgrade(self.rt)
        with self.rt.session() as s:
            b = Business(name="bench")
            s.add(b)
            s.flush()
            self.business = b.id
        # the job alone: no plugin service in the measured worker
        self.env["PROSAAS_DISABLE_SERVICES"] = ",".join(self.rt.registry.services)
        self.env["PROSAAS_SHUTDOWN_TIMEOUT"] = "5"
        self.after = 0

    def teardown(self) -> None:
        self.rt.close()
        drop_db(self.db)

    def enqueue(self, n: int) -> None:
        from prosaas_core.jobs.enqueue import enqueue

        with self.rt.engine.connect() as c:
            self.after = c.execute(
                text("SELECT coalesce(max(id), 0) FROM background_jobs")
            ).scalar()
        for i in range(n):
            enqueue(self.rt, "acme_echo", self.business, {"message": f"m{i}"})

    def command(self, forever: bool = False) -> list[str]:
        return [PROSAAS, "worker", *([] if forever else ["--burst"]), "--queues", "default"]

    # heartbeat each second, stale after 4 s, a sweep each second (defaults: 30, 90, 30)
    kill_env = {
        "PROSAAS_HEARTBEAT_INTERVAL": "1",
        "PROSAAS_STALE_AFTER": "4",
        "PROSAAS_SWEEP_INTERVAL": "1",
    }

    def enqueue_slow(self, marker: str, seconds: float) -> None:
        from prosaas_core.jobs.enqueue import enqueue

        self.slow_id = enqueue(self.rt, "acme_sleep", self.business, {"seconds": seconds}).id

    def slow_state(self, marker: str) -> tuple[int, int]:
        with self.rt.engine.connect() as c:
            status, attempts = c.execute(
                text("SELECT status, attempts FROM background_jobs WHERE id = :id"),
                {"id": self.slow_id},
            ).one()
        return attempts, int(status == "succeeded")

    def finish_times(self, out: Path, n: int) -> list[float]:
        with self.rt.engine.connect() as c:
            rows = c.execute(
                text(
                    "SELECT extract(epoch FROM finished_at)::float8 FROM background_jobs "
                    "WHERE id > :after AND status = 'succeeded'"
                ),
                {"after": self.after},
            ).scalars()
            return list(rows)


class RqPlain(System):
    name = "rq_plain"
    burst = True

    def enqueue(self, n: int) -> None:
        from rq import Queue

        q = Queue("peers", connection=redis.Redis.from_url(REDIS_URL))
        for i in range(n):
            q.enqueue("_peer_tasks.echo", f"m{i}")

    def enqueue_slow(self, marker: str, seconds: float) -> None:
        from rq import Queue

        Queue("peers", connection=redis.Redis.from_url(REDIS_URL)).enqueue(
            "_peer_tasks.slow", marker, seconds
        )

    def command(self, forever: bool = False) -> list[str]:
        return [
            sys.executable,
            "-m",
            "rq.cli",
            "worker",
            *([] if forever else ["--burst"]),
            "-w",
            "rq.worker.SimpleWorker",
            "--url",
            REDIS_URL,
            "peers",
        ]


class Celery(System):
    name = "celery"

    def enqueue(self, n: int) -> None:
        import _peer_celery

        for i in range(n):
            _peer_celery.echo.delay(f"m{i}")

    def enqueue_slow(self, marker: str, seconds: float) -> None:
        import _peer_celery

        _peer_celery.slow.delay(marker, seconds)

    def command(self, forever: bool = False) -> list[str]:
        return [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "_peer_celery",
            "worker",
            "--pool",
            "solo",
            "--concurrency",
            "1",
            "-Q",
            "peers",
            "--loglevel",
            "WARNING",
        ]


class Dramatiq(System):
    name = "dramatiq"

    def enqueue(self, n: int) -> None:
        import _peer_dramatiq

        for i in range(n):
            _peer_dramatiq.echo.send(f"m{i}")

    # a dead worker's messages come back after 3 s without heartbeat (default 60 s)
    kill_env = {"PEERS_DRAMATIQ_HEARTBEAT_MS": "3000"}

    def enqueue_slow(self, marker: str, seconds: float) -> None:
        import _peer_dramatiq

        _peer_dramatiq.slow.send(marker, seconds)

    def command(self, forever: bool = False) -> list[str]:
        return [
            sys.executable,
            "-m",
            "dramatiq",
            "_peer_dramatiq",
            "--processes",
            "1",
            "--threads",
            "1",
            "--queues",
            "peers",
        ]


class Huey(System):
    name = "huey"

    def enqueue(self, n: int) -> None:
        import _peer_huey

        for i in range(n):
            _peer_huey.echo(f"m{i}")

    def enqueue_slow(self, marker: str, seconds: float) -> None:
        import _peer_huey

        _peer_huey.slow(marker, seconds)

    def command(self, forever: bool = False) -> list[str]:
        return [
            sys.executable,
            "-m",
            "huey.bin.huey_consumer",
            "_peer_huey.huey",
            "-w",
            "1",
            "-k",
            "thread",
        ]


class Procrastinate(System):
    name = "procrastinate"
    burst = True

    def setup(self) -> None:
        self.db = create_db("prosaas_bench_procrastinate")
        self.env = {**self.env, "PEERS_PG_DSN": libpq_url(self.db)}
        os.environ["PEERS_PG_DSN"] = self.env["PEERS_PG_DSN"]
        import _peer_procrastinate

        self.app = _peer_procrastinate.app
        with self.app.open():
            self.app.schema_manager.apply_schema()

    def teardown(self) -> None:
        drop_db(self.db)

    def enqueue(self, n: int) -> None:
        import _peer_procrastinate

        with self.app.open():
            for i in range(n):
                _peer_procrastinate.echo.defer(message=f"m{i}")

    def enqueue_slow(self, marker: str, seconds: float) -> None:
        import _peer_procrastinate

        with self.app.open():
            _peer_procrastinate.slow.defer(marker=marker, seconds=seconds)

    def command(self, forever: bool = False) -> list[str]:
        return [
            sys.executable,
            "-m",
            "procrastinate",
            "--app",
            "_peer_procrastinate.app",
            "worker",
            "--queues",
            "peers",
            "--concurrency",
            "1",
            *([] if forever else ["--one-shot"]),
        ]


CLASSES = {c.name: c for c in (Prosaas, RqPlain, Celery, Dramatiq, Procrastinate, Huey)}


def run_round(system: System, n: int, timeout: float) -> dict:
    """Enqueue n jobs, drain them with one worker process; enqueue and drain rates."""
    redis.Redis.from_url(REDIS_URL).flushdb()
    t0 = time.perf_counter()
    system.enqueue(n)
    enqueue_rate = n / (time.perf_counter() - t0)
    fd, name = tempfile.mkstemp(prefix=f"peers-{system.name}-", suffix=".json")
    os.close(fd)
    out = Path(name)
    out.unlink()
    log = tempfile.TemporaryFile()
    env = {**system.env, "PEERS_EXPECT": str(n), "PEERS_OUT": str(out)}
    started = time.monotonic()
    proc = subprocess.Popen(
        system.command(), env=env, cwd=HERE, stdout=log, stderr=log, start_new_session=True
    )
    try:
        if system.burst:
            proc.wait(timeout=timeout)
        else:
            while not out.exists():
                if proc.poll() is not None:
                    break
                if time.monotonic() - started > timeout:
                    raise subprocess.TimeoutExpired(proc.args, timeout)
                time.sleep(0.05)
    finally:
        stop(proc)  # a non-burst worker: warm shutdown, then the hard way
    wall = time.monotonic() - started
    if system.burst and proc.returncode != 0:
        log.seek(0)
        raise RuntimeError(f"worker exited {proc.returncode}: {log.read().decode()[-2000:]}")
    if not system.burst and not out.exists():
        log.seek(0)
        raise RuntimeError(f"worker stopped before the end: {log.read().decode()[-2000:]}")
    times = sorted(system.finish_times(out, n))
    out.unlink(missing_ok=True)
    if len(times) != n:
        raise RuntimeError(f"{len(times)}/{n} jobs finished")
    return {
        "enqueue": enqueue_rate,
        "drain": (n - 1) / max(times[-1] - times[0], 1e-9),
        "wall": wall,
    }


def stop(proc: subprocess.Popen) -> None:
    """Warm shutdown of a worker's process group, then the hard way."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def kill_check(system: System, window: float, seconds: float = 1.5) -> dict:
    """SIGKILL a worker (its whole process group, as when a container dies) while it runs a
    job, start a fresh worker, and see whether the job runs again within `window` seconds."""
    redis.Redis.from_url(REDIS_URL).flushdb()
    where = Path(tempfile.mkdtemp(prefix=f"peers-kill-{system.name}-"))
    marker = str(where / "job")
    system.enqueue_slow(marker, seconds)
    env = {**system.env, **system.kill_env}
    cmd = system.command(forever=True)
    first = subprocess.Popen(cmd, env=env, cwd=HERE, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while system.slow_state(marker)[0] < 1:
            if time.monotonic() > deadline or first.poll() is not None:
                return {"checked": False, "why": "the job never started"}
            time.sleep(0.02)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    killed = time.monotonic()
    second = subprocess.Popen(cmd, env=env, cwd=HERE, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        while system.slow_state(marker)[1] < 1 and time.monotonic() - killed < window:
            time.sleep(0.1)
        started, done = system.slow_state(marker)
        after = time.monotonic() - killed
    finally:
        stop(second)
        shutil.rmtree(where, ignore_errors=True)
    return {
        "checked": True,
        "rerun": done >= 1,
        "after_s": round(after, 1) if done else None,
        "window_s": window,
        "starts": started,
        "settings": system.kill_env,
    }


def kill_verdict(k: dict) -> str:
    if not k["checked"]:
        return f"not checked: {k['why']}"
    if k["rerun"]:
        return f"re-run after {k['after_s']:.1f} s"
    return f"not re-run within {k['window_s']:g} s"


def spread(values: list[float]) -> float:
    """(max - min) / median, as a fraction: how far apart the rounds were."""
    med = statistics.median(values)
    return (max(values) - min(values)) / med if med else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="200 jobs, 1 round (a smoke run)")
    ap.add_argument("--jobs", type=int, help="jobs per system per round (default 5,000)")
    ap.add_argument("--rounds", type=int, help="interleaved rounds (default 3; 1 with --quick)")
    ap.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset")
    ap.add_argument(
        "--kill-check",
        action="store_true",
        help="also SIGKILL each system's worker mid-job and see if a fresh worker re-runs it",
    )
    ap.add_argument(
        "--kill-window", type=float, default=20.0, help="seconds to wait for the re-run"
    )
    args = ap.parse_args()
    n = args.jobs or (200 if args.quick else 5000)
    rounds = args.rounds or (1 if args.quick else 3)
    wanted = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in CLASSES]
    if unknown or "prosaas" not in wanted:
        sys.exit(
            f"--systems: unknown {', '.join(unknown)}" if unknown else "--systems: include prosaas"
        )
    skipped = {
        s: f"{NEEDS[s]} is not installed (pip install -r requirements-bench.txt)"
        for s in wanted
        if s in NEEDS and importlib.util.find_spec(NEEDS[s]) is None
    }
    systems_run = [s for s in wanted if s not in skipped]
    os.environ["PEERS_REDIS_URL"] = REDIS_URL  # read by the peer apps, here and in the workers
    base_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PROSAAS_")},
        "REDIS_URL": REDIS_URL,
        "PEERS_REDIS_URL": REDIS_URL,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        ),
    }
    load_before = loadavg()
    print(
        f"peers: {n} trivial jobs per system per round, {rounds} interleaved round(s), one "
        f"worker process each, {os.cpu_count()} CPUs, load average {load_before}"
    )
    for s, why in skipped.items():
        print(f"  skipped {s}: {why}")
    systems: dict[str, System] = {}
    results: dict[str, list[dict]] = {s: [] for s in systems_run}
    errors: dict[str, str] = {}
    kills: dict[str, dict] = {}
    timeout = 60 + n / 20  # a worker at 20 jobs/s still finishes
    try:
        for s in systems_run:
            systems[s] = CLASSES[s](dict(base_env))
            systems[s].setup()
        for r in range(rounds):
            order = systems_run[r % len(systems_run) :] + systems_run[: r % len(systems_run)]
            for s in order:
                if s in errors:
                    continue
                try:
                    res = run_round(systems[s], n, timeout)
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    errors[s] = str(exc).strip().splitlines()[-1][:300] if str(exc) else "failed"
                    print(f"  round {r + 1} {s:>13}: FAILED ({errors[s]})", flush=True)
                    continue
                results[s].append(res)
                print(
                    f"  round {r + 1} {s:>13}: enqueue {res['enqueue']:7.0f}/s  drain "
                    f"{res['drain']:7.0f}/s  (worker wall {res['wall']:.1f} s)",
                    flush=True,
                )
        if args.kill_check:
            print(f"kill check: SIGKILL each worker mid-job, a fresh worker, "
                  f"{args.kill_window:g} s to re-run it", flush=True)  # fmt: skip
            for s in systems_run:
                kills[s] = kill_check(systems[s], args.kill_window)
                k = kills[s]
                seen = kill_verdict(k)
                print(f"  {s:>13}: {seen}", flush=True)
    finally:
        for system in systems.values():
            try:
                system.teardown()
            except Exception as exc:  # a teardown must not hide the figures or another teardown
                print(f"  teardown {system.name}: {exc}", file=sys.stderr)
        redis.Redis.from_url(REDIS_URL).flushdb()

    summary: dict[str, object] = {"jobs": n, "rounds": rounds}
    med: dict[str, dict[str, float]] = {}
    print(
        f"\n{'system':<14}{'enqueue/s':>10}{'drain/s':>9}{'spread':>8}{'prosaas/x':>10}  "
        "on worker SIGKILL"
    )
    for s in systems_run:
        if not results[s]:
            continue
        drains = [x["drain"] for x in results[s]]
        med[s] = {
            "enqueue": statistics.median(x["enqueue"] for x in results[s]),
            "drain": statistics.median(drains),
            "spread": spread(drains),
        }
    for s in wanted:
        if s in skipped:
            print(f"{s:<14}{'skipped':>10}  {skipped[s]}")
            continue
        if s not in med:
            print(f"{s:<14}{'failed':>10}  {errors.get(s, '')}")
            continue
        m = med[s]
        ratio = med["prosaas"]["drain"] / m["drain"] if "prosaas" in med else float("nan")
        print(
            f"{s:<14}{m['enqueue']:>10.0f}{m['drain']:>9.0f}{m['spread']:>7.0%} "
            f"{ratio:>10.2f}  {DURABILITY[s][0]}"
        )
        summary[f"{s}_enqueue_per_s"] = round(m["enqueue"], 1)
        summary[f"{s}_drain_per_s"] = round(m["drain"], 1)
        summary[f"{s}_drain_spread"] = round(m["spread"], 3)
        summary[f"{s}_drain_rounds"] = [round(x["drain"], 1) for x in results[s]]
    print("\ndurability (what happens to a running job when its worker is SIGKILLed):")
    for s in SYSTEMS:
        seen = f" [measured: {kill_verdict(kills[s])}]" if s in kills else ""
        print(f"  {s:<14}{DURABILITY[s][0]}{seen}: {DURABILITY[s][1]}")
    for s in SYSTEMS[1:]:
        key = f"vs_{s}"
        if "prosaas" in med and s in med:
            summary[key] = round(med["prosaas"]["drain"] / med[s]["drain"], 3)
        else:
            summary[key] = None  # skipped, failed or not asked for: said in "skipped"/"errors"
    summary["durability"] = {s: DURABILITY[s][0] for s in SYSTEMS}
    if kills:
        summary["kill_check"] = kills
    summary["skipped"] = skipped
    summary["errors"] = errors
    summary["settings"] = {
        "prosaas": "prosaas worker --burst (SimpleWorker), services disabled",
        "rq_plain": "rq worker --burst -w SimpleWorker, no database",
        "celery": "worker --pool solo --concurrency 1, Redis broker + results, defaults",
        "dramatiq": "--processes 1 --threads 1, RedisBroker, default middleware",
        "procrastinate": "worker --concurrency 1 --one-shot, PsycopgConnector, own database",
        "huey": "huey_consumer -w 1 -k thread, RedisHuey defaults",
    }
    summary["loadavg_before"] = load_before
    summary["loadavg"] = loadavg()
    print(json.dumps(summary))
    if errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
