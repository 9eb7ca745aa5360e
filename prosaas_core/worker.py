"""``prosaas worker``: an RQ worker on the installed job types' queues, plus the supervised plugin
services, the worker heartbeat, the sweeper and the retry pump, in one process.

The RQ worker class is SimpleWorker (the job runs in the worker process) by measurement: see
bench/worker_throughput.py. ``PROSAAS_WORKER_CLASS=fork`` selects RQ's forking Worker instead;
a forked work horse never reuses the parent's database connections (dispatch.after_fork_in_child).
"""

from __future__ import annotations

import logging
import mmap
import os
import socket
import threading
import time
import uuid
from typing import TYPE_CHECKING

from rq import SimpleWorker, Worker
from rq.exceptions import StopRequested

from prosaas_core.jobs import dispatch
from prosaas_core.jobs.heartbeat import WorkerHeartbeat
from prosaas_core.services import Supervisor

if TYPE_CHECKING:
    from prosaas_core.runtime import Runtime

log = logging.getLogger("prosaas.worker")


class SharedFlag:
    """A threading.Event-like flag in shared memory, so a forked work horse sees the parent's
    shutdown request."""

    def __init__(self) -> None:
        self._mem = mmap.mmap(-1, 1)

    def set(self) -> None:
        self._mem[0] = 1

    def is_set(self) -> bool:
        return self._mem[0] == 1


class _ProsaasMixin:
    """Raise the shutdown flag on SIGTERM/SIGINT (so the running handler's should_stop() says
    True) before RQ's warm shutdown, and bound how long the shutdown may take."""

    prosaas_shutdown: SharedFlag
    prosaas_on_stop: callable  # type: ignore[valid-type]

    def request_stop(self, signum, frame):  # RQ's signal handler
        if not self.prosaas_shutdown.is_set():
            self.prosaas_shutdown.set()
            log.info("WORKER STOPPING (signal %s): finishing the current job's checkpoint", signum)
            self.prosaas_on_stop()
        return super().request_stop(signum, frame)


class ProsaasSimpleWorker(_ProsaasMixin, SimpleWorker):
    log_result_lifespan = False


class ProsaasForkWorker(_ProsaasMixin, Worker):
    log_result_lifespan = False


WORKER_CLASSES = {"simple": ProsaasSimpleWorker, "fork": ProsaasForkWorker}


def worker_name() -> str:
    return f"prosaas.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:4]}"


def resolve_queues(rt: Runtime, queues: list[str] | None) -> list[str]:
    """The queues to listen on: those given, else every installed job type's queue."""
    if queues:
        unknown = sorted(set(queues) - set(rt.registry.queues))
        if unknown:
            log.warning("no installed job type uses queue(s) %s", ", ".join(unknown))
        return list(dict.fromkeys(queues))
    return rt.registry.queues or ["default"]


def _log_queues(rt: Runtime, queues: list[str]) -> None:
    log.info("WORKER QUEUES CONFIGURATION")
    for q in queues:
        types = sorted(n for n, jt in rt.registry.job_types.items() if jt.queue == q)
        log.info("   queue %r: %s", q, ", ".join(types) or "(no installed job type)")


class Maintenance:
    """The sweeper (every sweep_interval) and the retry pump (twice a second) in one thread."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self, *, grace: float) -> None:
        from prosaas_core.jobs.delayed import pump
        from prosaas_core.jobs.sweeper import sweep

        try:
            sweep(self.rt, grace=grace)
        except Exception:
            log.exception("sweep failed")
        try:
            pump(self.rt)
        except Exception:
            log.exception("retry pump failed")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="sweeper", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        from prosaas_core.jobs.delayed import pump
        from prosaas_core.jobs.sweeper import sweep

        interval = self.rt.settings.sweep_interval
        next_sweep = time.monotonic() + interval
        while not self._stop.wait(min(0.5, interval)):
            try:
                pump(self.rt)
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + interval
                    sweep(self.rt)
            except Exception as exc:  # database or Redis away: try again next round
                log.warning("sweeper round failed: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


def run_worker(
    rt: Runtime,
    *,
    queues: list[str] | None = None,
    burst: bool = False,
    worker_class: str | None = None,
) -> int:
    """Run until stopped (or, with `burst`, until the queues are empty). Returns an exit code."""
    kind = worker_class or rt.settings.worker_class
    if kind not in WORKER_CLASSES:
        raise ValueError(f"PROSAAS_WORKER_CLASS must be one of {', '.join(WORKER_CLASSES)}")
    names = resolve_queues(rt, queues)
    name = worker_name()
    shutdown = SharedFlag()
    grace = rt.settings.shutdown_timeout

    rt.redis.ping()
    log.info("Redis connection established")
    _log_queues(rt, names)
    disp = dispatch.configure(rt, name, shutdown)  # type: ignore[arg-type]
    supervisor = Supervisor.from_runtime(rt)
    supervisor.start()
    heartbeat = WorkerHeartbeat(
        rt,
        name,
        names,
        supervisor.snapshot,
        lambda: disp.current.job_id if disp.current is not None else None,
    )
    heartbeat.start()
    from prosaas_core.jobs.flow import Waker

    waker = Waker(rt.flow).start()
    if "ENABLE_SCHEDULERS" in rt.settings.env:
        log.warning(
            "ENABLE_SCHEDULERS is set but prosaas does not read it: every prosaas worker "
            "fires schedules and runs every service (a flag like it once stopped recordings)"
        )
    from prosaas_core.jobs.scheduler import Scheduler

    scheduler = Scheduler(rt, name)
    maintenance = Maintenance(rt)
    maintenance.run_once(grace=0.0)  # at start-up: rows Redis lost are pushed before draining
    if not burst:
        maintenance.start()
        scheduler.start()

    def on_stop() -> None:
        # services stop in parallel with the job's wind-down; a watchdog bounds the whole stop
        threading.Thread(target=supervisor.stop, args=(grace,), daemon=True).start()
        threading.Thread(target=_watchdog, args=(disp, grace), daemon=True).start()

    cls = WORKER_CLASSES[kind]
    log.info("WORKER STARTED name=%s class=%s burst=%s", name, cls.__name__, burst)
    try:
        while True:
            worker = cls(names, name=name, connection=rt.redis)
            worker.prosaas_shutdown = shutdown
            worker.prosaas_on_stop = on_stop
            worker.work(burst=burst, logging_level=None)
            # a burst drains retries too: wait for the next one due on our queues, if any
            try:
                if not burst or shutdown.is_set():
                    break
                if not _wait_for_parked(rt, names, shutdown) and not _wait_for_retry(
                    rt, names, shutdown
                ):
                    break
            except StopRequested:  # a signal between two bursts
                break
    finally:
        shutdown.set()
        maintenance.stop()
        scheduler.stop()
        waker.stop()
        late = supervisor.stop(grace)
        heartbeat.stop()
        disp.stop()
        log.info("WORKER STOPPED name=%s%s", name, f" (late services: {late})" if late else "")
    return 0


def _wait_for_parked(rt: Runtime, queues: list[str], shutdown: SharedFlag) -> bool:
    """A burst drains parked jobs too: while some of our queues' jobs are parked, wait until the
    waker pushes one. False when none are parked."""
    from sqlalchemy import func, select

    from prosaas_core.jobs.store import T, c
    from prosaas_core.jobs.transport import rq_queue

    def parked() -> int:
        with rt.engine.connect() as conn:
            return conn.execute(
                select(func.count())
                .select_from(T)
                .where(c.parked.is_not(None), c.status == "queued", c.queue.in_(queues))
            ).scalar_one()

    if not parked():
        return False
    log.info("burst: waiting for parked jobs to be admitted")
    while not shutdown.is_set():
        if any(rq_queue(rt.redis, q).count for q in queues):
            return True
        if not parked():
            return True
        time.sleep(0.1)
    return False


def _wait_for_retry(rt: Runtime, queues: list[str], shutdown: SharedFlag) -> bool:
    """Sleep until the next delayed retry on `queues` is due and push it. False if none."""
    from prosaas_core.jobs.delayed import next_due, pump

    due = next_due(rt, queues)
    if due is None:
        return False
    log.info("burst: waiting %.1fs for a retry to become due", max(due - time.time(), 0))
    while time.time() < due:
        if shutdown.is_set():
            return False
        time.sleep(min(0.1, max(due - time.time(), 0)))
    pump(rt)
    return True


def _watchdog(disp: dispatch.Dispatcher, grace: float) -> None:
    """After a stop signal, exit anyway once `grace` seconds have passed: the running job is
    handed back to the queue first (fenced), so nobody waits for its heartbeat to go stale."""
    time.sleep(grace)
    ctx = disp.current
    log.error("WORKER STOP TIMEOUT after %.0fs: exiting now", grace)
    if ctx is not None:
        try:
            disp.release(ctx)
        except Exception:
            log.exception("could not hand job_id=%s back to the queue", ctx.job_id)
    logging.shutdown()
    os._exit(1)
