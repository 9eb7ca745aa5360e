"""``prosaas worker``: an RQ worker on the installed job types' queues, plus the supervised plugin
services, the worker heartbeat, the sweeper and the retry pump, in one process.

The RQ worker class is SimpleWorker (the job runs in the worker process) by measurement: see
bench/worker_throughput.py. ``PROSAAS_WORKER_CLASS=fork`` selects RQ's forking Worker instead;
a forked work horse never reuses the parent's database connections (dispatch.after_fork_in_child).
"""

from __future__ import annotations

import errno
import gc
import logging
import mmap
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rq import SimpleWorker, Worker
from rq.exceptions import StopRequested
from rq.timeouts import HorseMonitorTimeoutException

from prosaas_core.jobs import dispatch
from prosaas_core.jobs.delivery import Delivery, LeanMixin
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


class _QuietReconnects(logging.Filter):
    """RQ logs "could not connect to Redis" at every reconnect try; our outage lines already
    say when Redis went away and came back, so only the first of a run gets through."""

    def __init__(self) -> None:
        super().__init__()
        self._last = 0.0

    def filter(self, record: logging.LogRecord) -> bool:
        if "could not connect to Redis" not in str(record.msg):
            return True
        now = time.monotonic()
        first = now - self._last > 60
        self._last = now
        return first


# the mixin is checked as the RQ worker it is mixed into (at run time it stays a plain mixin)
if TYPE_CHECKING:
    _WorkerBase = Worker
else:
    _WorkerBase = object


class _ProsaasMixin(_WorkerBase):
    """Raise the shutdown flag on SIGTERM/SIGINT (so the running handler's should_stop() says
    True) before RQ's warm shutdown, and bound how long the shutdown may take."""

    #: RQ doubles its reconnect pause up to a minute; work must resume within a second or two
    #: of Redis returning
    max_connection_wait_time = 1.0
    exponential_backoff_factor = 1.0
    prosaas_shutdown: SharedFlag
    prosaas_on_stop: Callable[[Any], None]
    prosaas_rt: Runtime
    prosaas_name: str

    def request_stop(self, signum: int, frame: Any) -> None:  # RQ's signal handler
        if not self.prosaas_shutdown.is_set():
            self.prosaas_shutdown.set()
            log.info("WORKER STOPPING (signal %s): finishing the current job's checkpoint", signum)
            self.prosaas_on_stop(self)
        return super().request_stop(signum, frame)


class ProsaasSimpleWorker(_ProsaasMixin, LeanMixin, SimpleWorker):
    """RQ's in-process worker on the lean per-job path (jobs/delivery.py)."""

    log_result_lifespan = False


class ProsaasForkWorker(_ProsaasMixin, LeanMixin, Worker):
    """RQ's forking worker, made to hand a job back as soon as its work horse dies, and to take
    the work horse down with it when the worker itself dies. A prosaas job takes the lean path
    (jobs/delivery.py) with a work horse of its own: forked, watched as RQ's
    monitor_work_horse does (RQ's backstop timeout included), without RQ's Execution record."""

    log_result_lifespan = False
    lean_defer_outcomes = False  # each job's work horse exits after it
    prosaas_rt: Runtime
    prosaas_name: str
    #: set by the stop watchdog: it hands the job back itself (without counting the attempt)
    prosaas_stopping = False
    _prosaas_parent = 0
    _prosaas_dead_horse: str | None = None

    def execute_job(self, job, queue):
        self._prosaas_parent = os.getpid()
        self._prosaas_dead_horse = None
        try:
            super().execute_job(job, queue)
        finally:
            if self._prosaas_dead_horse is not None and not self.prosaas_stopping:
                _hand_back_dead_horse(self.prosaas_rt, self.prosaas_name, job.id)

    def _lean_run(self, d: Delivery) -> None:
        self._prosaas_parent = parent = os.getpid()
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:  # the work horse: exit 0 once the outcome is recorded, 1 if it was not
            os.setpgrp()
            _die_with_parent(parent)
            self.setup_work_horse_signals()
            self._is_horse = True
            try:
                ok = self._lean_perform(d)
            except BaseException:
                os._exit(1)
            os._exit(0 if ok else 1)
        self._horse_pid = pid
        self.procline(f"Forked {pid} at {time.time()}")
        status = self._lean_watch(d, started)
        self._horse_pid = 0
        if status == 0:
            self._lean_done += 1
            return
        self._lean_failed += 1
        if not self.prosaas_stopping:
            log.warning("work horse of job_id=%s ended with status %s", d.job_id, status)
            _hand_back_dead_horse(self.prosaas_rt, self.prosaas_name, d.id)

    def _lean_watch(self, d: Delivery, started: float) -> int | None:
        """Wait for the work horse, beating meanwhile; kill it past RQ's backstop (its job
        timeout + 60 s). Its wait status (None if it could not be reaped)."""
        while True:
            try:
                with self.death_penalty_class(
                    self.job_monitoring_interval, HorseMonitorTimeoutException
                ):
                    return self.wait_for_horse()[1]
            except HorseMonitorTimeoutException:
                self.heartbeat()
                if d.timeout > 0 and time.monotonic() - started > d.timeout + 60:
                    self.kill_horse()
                    return self.wait_for_horse()[1]
            except OSError as exc:  # EINTR: a signal arrived while waiting
                if exc.errno != errno.EINTR:
                    raise

    def main_work_horse(self, job, queue):
        _die_with_parent(self._prosaas_parent)
        return super().main_work_horse(job, queue)

    def handle_work_horse_killed(self, job, retpid, ret_val, rusage):
        # the row is handed back after RQ has recorded the failure (execute_job's finally), so
        # RQ's bookkeeping never overwrites the fresh push
        self._prosaas_dead_horse = job.id
        return super().handle_work_horse_killed(job, retpid, ret_val, rusage)


def _die_with_parent(parent: int) -> None:
    """In a work horse: be SIGKILLed when the worker dies, so an orphan never keeps running a
    job the sweeper hands to someone else (Linux only; elsewhere the fence still holds)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the worker died before prctl took effect
        os._exit(1)


def _hand_back_dead_horse(rt: Runtime, name: str, rq_id: str) -> None:
    """A work horse died without recording an outcome: requeue its job now (the attempt
    counts, so a job that kills its horse every time ends ``failed``)."""
    from prosaas_core.db import autocommit
    from prosaas_core.jobs.dbretry import retry_transient
    from prosaas_core.jobs.lease import hand_back
    from prosaas_core.jobs.transport import push_many

    if not rq_id.startswith("prosaas-"):
        return
    job_id = int(rq_id.removeprefix("prosaas-"))

    def _go():
        with autocommit(rt.engine) as conn:
            return hand_back(conn, name, job_id, refund=False)

    try:
        rows = retry_transient(_go, rt.settings.db_retry, what="hand back")
    except Exception:
        log.exception("could not hand back job_id=%s after its work horse died", job_id)
        return
    if rows:
        push_many(rt, rows)
        log.warning("JOB RESCUED job_id=%s: its work horse died, requeued", job_id)
    else:
        log.warning(
            "work horse of job_id=%s died; not requeued (finished, or no attempts left)", job_id
        )


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


#: a Redis key the maintenance loop keeps set: when it is missing, Redis was flushed or restarted
#: empty, and the queued rows are re-pushed at once instead of at the next full sweep
MARKER_KEY = "prosaas:transport"


class Maintenance:
    """The sweeper and the retry pump in one thread.

    Twice a second it pumps due retries and checks that Redis still holds MARKER_KEY; every
    lease renewal period it rescues the jobs of workers whose lease lapsed; every
    ``sweep_interval`` (and at once when Redis was flushed, restarted or came back after an
    outage) it re-pushes the queued rows Redis lost. During an outage it logs one line when the
    dependency goes, one when it is back, and counts the failures in between.
    """

    TICK = 0.5

    def __init__(self, rt: Runtime) -> None:
        from prosaas_core.jobs.outage import Outage

        self.rt = rt
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.db = Outage("database", "sweeper", log)
        self.redis = Outage("redis", "sweeper", log)
        ttl = rt.settings.lease_ttl
        self.rescue_every = max(min(1.0, ttl / 4), 0.05) if ttl > 0 else 1.0
        now = time.monotonic()
        self._next_rescue = now
        self._next_full = now + rt.settings.sweep_interval
        #: an urgent full sweep is due (Redis back or emptied) until one succeeds
        self._urgent = False

    def run_once(self, *, grace: float) -> None:
        from prosaas_core.jobs.delayed import pump
        from prosaas_core.jobs.sweeper import sweep

        try:
            self._mark()
            sweep(self.rt, grace=grace)
        except Exception:
            log.exception("sweep failed")
        try:
            pump(self.rt)
        except Exception:
            log.exception("retry pump failed")

    def _mark(self) -> bool:
        """Set MARKER_KEY; True when it was missing (Redis lost its data)."""
        return bool(self.rt.redis.set(MARKER_KEY, "1", nx=True))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="sweeper", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        tick = min(self.TICK, self.rescue_every, self.rt.settings.sweep_interval)
        while not self._stop.wait(tick):
            self.round()

    def round(self) -> None:
        """One round of the loop (public for tests)."""
        from redis.exceptions import RedisError

        from prosaas_core.jobs.delayed import pump
        from prosaas_core.jobs.sweeper import sweep

        now = time.monotonic()
        urgent = False
        try:
            pump(self.rt)
            fresh = self._mark()
        except RedisError as exc:
            self.redis.failed(exc)
        else:
            # back after an outage (pushes failed meanwhile) or emptied (a flush, a restart):
            # look now, without the grace for rows between commit and push (a duplicate push
            # is only a skipped delivery)
            self._urgent = self.redis.ok() or fresh or self._urgent
            urgent = self._urgent
        full = urgent or (now >= self._next_full and not self.redis.down)
        if not full and now < self._next_rescue:
            return
        # after our own database outage, live workers get one lease period to renew before
        # their leases count as lapsed
        # (the first sweep after the outage, while self.db still says down, included)
        leases = not self.db.down and now - self.db.back_at >= self.rt.settings.lease_ttl
        try:
            report = sweep(self.rt, lost=full, leases=leases, grace=0.0 if urgent else 1.0)
        except RedisError as exc:
            self.redis.failed(exc)
        except Exception as exc:  # the database is away: try again next round
            self.db.failed(exc)
        else:
            self.db.ok()
            if report.skipped:  # another worker was sweeping: ours is still due next round
                return
            self._urgent = self._urgent and not full
        self._next_rescue = now + self.rescue_every
        if full:
            self._next_full = now + self.rt.settings.sweep_interval

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
    from redis.exceptions import RedisError

    from prosaas_core.jobs.lease import WorkerLease
    from prosaas_core.jobs.outage import Outage

    kind = worker_class or rt.settings.worker_class
    if kind not in WORKER_CLASSES:
        raise ValueError(f"PROSAAS_WORKER_CLASS must be one of {', '.join(WORKER_CLASSES)}")
    names = resolve_queues(rt, queues)
    name = worker_name()
    shutdown = SharedFlag()
    grace = rt.settings.shutdown_timeout

    rt.redis.ping()
    log.info("Redis connection established")
    logging.getLogger("rq.worker").addFilter(_QuietReconnects())
    _log_queues(rt, names)
    disp = dispatch.configure(rt, name, shutdown)  # type: ignore[arg-type]
    lease = WorkerLease(rt, name)
    lease.start()
    disp.lease = lease
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
    from prosaas_core.jobs.housekeeping import Housekeeper
    from prosaas_core.jobs.scheduler import Scheduler

    scheduler = Scheduler(rt, name)
    housekeeper = Housekeeper(rt, name)
    maintenance = Maintenance(rt)
    maintenance.run_once(grace=0.0)  # at start-up: rows Redis lost are pushed before draining
    if not burst:
        maintenance.start()
        scheduler.start()
        housekeeper.start()

    def on_stop(worker) -> None:
        # services stop in parallel with the job's wind-down; a watchdog bounds the whole stop
        threading.Thread(target=supervisor.stop, args=(grace,), daemon=True).start()
        threading.Thread(target=_watchdog, args=(disp, worker, lease, grace), daemon=True).start()

    cls = WORKER_CLASSES[kind]
    # Start-up's objects (modules, plugins, SQLAlchemy's metadata: some 100,000) live as long
    # as the worker. Collected once and frozen, they are out of every later collection: a full
    # one walked them all, 50 to 85 ms here, in the middle of whatever job or download ran.
    gc.collect()
    gc.freeze()
    log.info("WORKER STARTED name=%s class=%s burst=%s", name, cls.__name__, burst)
    redis_state = Outage("redis", "worker", log)
    runs = 0
    try:
        while True:
            try:
                # a restarted RQ worker registers under a new RQ name: the old one's record
                # may survive in Redis; claims and the lease keep `name`
                worker = cls(
                    names, name=name if not runs else f"{name}-r{runs}", connection=rt.redis
                )
                runs += 1
                worker.prosaas_shutdown = shutdown
                worker.prosaas_on_stop = on_stop
                worker.prosaas_rt = rt
                worker.prosaas_name = name
                worker.work(burst=burst, logging_level=None)
            except RedisError as exc:  # Redis went away while RQ registered or tore down
                if burst:
                    raise
                redis_state.failed(exc)
            if shutdown.is_set():
                break
            if burst:
                # a burst drains retries too: wait for the next one due on our queues, if any
                try:
                    if not _wait_for_parked(rt, names, shutdown) and not _wait_for_retry(
                        rt, names, shutdown
                    ):
                        break
                except StopRequested:  # a signal between two bursts
                    break
                continue
            # RQ's loop quit on an error (a Redis timeout, a lost connection): start it again
            # as soon as Redis answers
            if not _wait_for_redis(rt, shutdown, redis_state):
                break
    finally:
        if _TIMED_OUT.is_set():  # the watchdog hands the job back and exits 1: leave it to it
            time.sleep(30)
        shutdown.set()
        maintenance.stop()
        scheduler.stop()
        housekeeper.stop()
        waker.stop()
        late = supervisor.stop(grace)
        heartbeat.stop()
        disp.flush_quietly()  # before the lease hands back what still runs under our name
        lease.stop()
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


def _wait_for_redis(rt: Runtime, shutdown: SharedFlag, state) -> bool:
    """Poll Redis every 0.2 s until it answers (True) or the worker is stopping (False)."""
    from redis.exceptions import RedisError

    while not shutdown.is_set():
        try:
            rt.redis.ping()
        except RedisError as exc:
            state.failed(exc)
            time.sleep(0.2)
            continue
        state.ok()
        return True
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


#: set once the stop watchdog fired; the main thread then stays out of its way
_TIMED_OUT = threading.Event()


def _watchdog(disp: dispatch.Dispatcher, worker, lease, grace: float) -> None:
    """After a stop signal, exit anyway once `grace` seconds have passed. The running job is
    handed back to the queue first (fenced, the attempt not counted), so nobody waits for a
    lease to lapse; a forking worker first ends the work horse it started."""
    time.sleep(grace)
    _TIMED_OUT.set()
    log.error("WORKER STOP TIMEOUT after %.0fs: exiting now", grace)
    disp.flush_quietly()  # a finished job's held-back outcome, before anything is handed back
    ctx = disp.current
    if ctx is not None:  # simple worker: the job runs in this process
        try:
            disp.release(ctx)
        except Exception:
            log.exception("could not hand job_id=%s back to the queue", ctx.job_id)
    horse = getattr(worker, "horse_pid", 0)
    if horse:
        worker.prosaas_stopping = True
        try:
            os.killpg(os.getpgid(horse), signal.SIGKILL)
        except OSError:
            pass
        end = time.monotonic() + 5
        while worker.horse_pid and time.monotonic() < end and _alive(horse):
            time.sleep(0.02)
        log.warning("WORKER STOP TIMEOUT: work horse pid %s killed", horse)
        _release_all(disp.rt, disp.worker_name)
    try:
        lease.stop()  # hands back anything still running under our name, drops the lease
    except Exception:
        log.exception("could not drop the worker lease")
    logging.shutdown()
    os._exit(1)


def _alive(pid: int) -> bool:
    """False once `pid` is gone or a zombie (its parent has not reaped it yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _release_all(rt: Runtime, name: str) -> None:
    """Hand back every job still running under this worker's name (its work horse is dead)."""
    from prosaas_core.db import autocommit
    from prosaas_core.jobs.lease import hand_back
    from prosaas_core.jobs.transport import push_many

    try:
        with autocommit(rt.engine) as conn:
            rows = hand_back(conn, name, refund=True)
        push_many(rt, rows)
    except Exception:
        log.exception("could not hand the running job back to the queue")
        return
    for job_id, _, _ in rows:
        log.warning("JOB RELEASED job_id=%s: handed back to the queue", job_id)
