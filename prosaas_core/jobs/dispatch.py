"""The one RQ function: ``run_job(job_id)`` claims the row, runs the plugin handler, records the
outcome. A trivial job costs two database round trips: the claim (UPDATE ... RETURNING) and the
final UPDATE, both named queries (``jobs/queries.sql``) on an autocommit driver connection the
worker keeps open.

On PostgreSQL the in-process worker (``run(..., defer=True)``) makes that one commit per job: a
job's outcome is held back and written by the next job's claim, in one statement
(`store.finish_and_claim`), since the commit's WAL flush is what a trivial job waits for most.
Nothing waits on a held-back outcome: the worker writes it alone (`flush`) before it waits for
work, runs anything else, or stops. A worker killed in between loses the outcome as one killed
just before its final write would: the row is still running, and is handed back and run again.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from prosaas_core.jobs import errortext, store
from prosaas_core.jobs.context import CheckpointLost, JobContext, JobLost
from prosaas_core.jobs.dbretry import retry_transient, transient
from prosaas_core.jobs.flow import Held, Refusal, flow_key
from prosaas_core.jobs.timeout import JobTimeout, deadline
from prosaas_core.store import Db, connect, set_autocommit

if TYPE_CHECKING:
    from sqlalchemy.pool import PoolProxiedConnection

    from prosaas_core.registry import JobType
    from prosaas_core.runtime import Runtime

log = logging.getLogger("prosaas.worker")

#: seconds before an attempt cut short by a lost database connection runs again
DB_LOST_RETRY = 1.0
#: the statements of every job, prepared once on the worker's kept connection (planning them
#: cost PostgreSQL more than running them: 12 indexes, the job-type CHECK)
PREPARED = (store.Q.claim_job, store.Q.finish_job, store.FINISH_AND_CLAIM)
#: seconds a held-back outcome may wait for the next claim before the job-heartbeat thread
#: writes it alone (the next pop may be stuck behind a Redis that does not answer)
HOLD_MAX = 1.0


def short_traceback(exc: BaseException) -> str:
    """The stored error: a safe summary line, then the innermost few frames (errortext)."""
    return errortext.operator_text(exc)


def backoff(rt: Runtime, attempt: int) -> float:
    """Seconds before retry number `attempt` (1-based): base * 2**(attempt-1), capped."""
    from prosaas_core.backoff import exponential

    return exponential(attempt, rt.settings.retry_backoff, rt.settings.retry_backoff_max)


@dataclass(frozen=True, slots=True)
class _Done:
    """A job's outcome and what its log line says."""

    claim: store.Claim
    outcome: store.Outcome
    took: float


class Dispatcher:
    """Per-process state of the worker: its name, its shutdown flag, the running job and the
    autocommit connection the main thread writes job state with."""

    def __init__(
        self, rt: Runtime, worker_name: str, shutdown: threading.Event, *, prepare: bool = False
    ) -> None:
        """`prepare`: the kept connection prepares the per-job statements (`PREPARED`): for a
        process that runs many jobs on it (``prosaas worker``; a plain ``rq worker``'s work
        horse runs one)."""
        self.rt = rt
        self.worker_name = worker_name
        self.shutdown = shutdown
        self.current: JobContext | None = None
        #: the main thread's pooled driver connection, kept checked out, and its Db
        self._raw: PoolProxiedConnection | None = None
        self._db: Db | None = None
        self._owner = threading.get_ident()
        self._pid = os.getpid()
        self._beat: threading.Thread | None = None
        self._beat_stop = threading.Event()
        #: the flow-control slot of the running job, renewed by the heartbeat thread
        self.held: Held | None = None
        #: the worker's lease (prosaas_core.jobs.lease.WorkerLease), when it holds one
        self.lease: Any = None
        #: the last job's outcome held back for the next claim (PostgreSQL only), and since
        #: when; whoever writes it takes it under the lock: the next claim, a flush, the
        #: job-heartbeat thread once it is HOLD_MAX old, the stop watchdog
        self._pending: _Done | None = None
        self._pending_at = 0.0
        self._pending_lock = threading.Lock()
        self._deferring = False
        #: whether the kept connection may prepare statements (the pooler probe: at first use)
        self._prepared_ok: bool | None = None if prepare else False
        self._parent_pid = self._pid

    # -- connections ------------------------------------------------------------------------

    def _main_db(self) -> Db:
        """The main thread's Db: a kept cursor on the driver connection it keeps checked out
        of the pool, in autocommit mode (the claim and the final write skip SQLAlchemy's
        execution machinery and the pool's checkout)."""
        if self._db is None:
            prepare = self._prepare()  # before the checkout: the probe takes connections too
            raw = self.rt.engine.raw_connection()
            dbapi_conn = raw.dbapi_connection
            assert dbapi_conn is not None
            set_autocommit(dbapi_conn, self.rt.engine.dialect, True)
            self._raw = raw
            self._db = Db(
                dbapi_conn,
                self.rt.engine.dialect,
                cursor=dbapi_conn.cursor(),
                on_lost=self._lost,
                prepare=prepare,
            )
        return self._db

    def _prepare(self) -> tuple[Any, ...]:
        """The per-job statements the kept connection prepares: on PostgreSQL in a session of
        its own (never through a transaction pooler, which hands each transaction another
        backend), in the process that keeps the connection (not in a work horse, whose
        connection lasts one job: it does not even probe). The pooler probe runs once."""
        if self._pid != self._parent_pid or self._prepared_ok is False:
            return ()
        if self._prepared_ok is None:
            from prosaas_core.migrate.pooler import transaction_pooled

            engine = self.rt.engine
            try:
                self._prepared_ok = engine.dialect.name == "postgresql" and not (
                    transaction_pooled(engine)
                )
            except Exception as exc:  # the database away: this connection goes unprepared
                log.warning("prepared statements off for now: pooler probe failed (%s)", exc)
                return ()
        return PREPARED if self._prepared_ok else ()

    def _lost(self, err: BaseException) -> None:
        """The kept connection is gone: the next statement connects afresh."""
        raw, self._raw, self._db = self._raw, None, None
        if raw is not None:
            raw.invalidate(err)

    @contextmanager
    def connect(self) -> Iterator[Db]:
        """The Db store.* writes with, in autocommit mode: the kept connection's in the main
        thread, a pooled one's elsewhere. A lost connection raises DBAPIError with
        ``connection_invalidated``."""
        if threading.get_ident() == self._owner:
            yield self._main_db()
            return
        with connect(self.rt.engine) as db:
            yield db

    def _retrying(self, fn, *args, **kwargs):
        """Run one statement; again on a fresh connection while the database is unreachable
        (a restart, a terminated backend), for up to PROSAAS_DB_RETRY seconds."""

        def once():
            with self.connect() as conn:
                return fn(conn, *args, **kwargs)

        return retry_transient(once, self.rt.settings.db_retry, what=f"job {fn.__name__}")

    def _retried(self, fn, *args) -> tuple[Any, bool]:
        """`_retrying`, and whether it took more than one try: a first try whose answer was
        lost with its connection may have committed, so a refusal then needs a second look."""
        tries = 0

        def counted(conn, *args):
            nonlocal tries
            tries += 1
            return fn(conn, *args)

        counted.__name__ = fn.__name__
        return self._retrying(counted, *args), tries > 1

    def _claim(self, job_id: int) -> store.Claim | None:
        """store.claim, with the held-back outcome if any (`_claim_after`)."""
        pending = self._take_pending()
        if pending is not None and pending.outcome.job_id == job_id:  # one row, two writes
            self._write_held(pending)
            pending = None
        if pending is not None:
            try:
                return self._claim_after(pending, job_id)
            except Exception as exc:
                if transient(exc):  # the database away: the outcome waits for the next write
                    self._put_back(pending)
                    raise
                log.warning(
                    "job_id=%s: its outcome and job_id=%s's claim were refused together (%s): "
                    "writing them apart",
                    pending.claim.id,
                    job_id,
                    errortext.first_line(str(exc)),
                )
                try:
                    self._write_held(pending)
                except Exception:
                    log.exception("job_id=%s: outcome not recorded", pending.claim.id)
            except BaseException:  # a cold shutdown: teardown's flush writes it
                self._put_back(pending)
                raise
        return self._claim_alone(job_id)

    def _claim_alone(self, job_id: int) -> store.Claim | None:
        """store.claim, retried across a database blip. A claim whose answer was lost with the
        connection may have committed: the retry then finds the row running under our name,
        and that claim is ours (it would otherwise sit there until its heartbeat went
        stale)."""
        result, retried = self._retried(store.claim, job_id, self.worker_name)
        if result is None and retried:
            result = self._adopt(job_id)
        return result

    def _claim_after(self, pending: _Done, job_id: int) -> store.Claim | None:
        """`pending`'s outcome and the claim of `job_id` in one statement, retried across a
        blip (a lost answer: as in `_claim_alone` and `_write`)."""
        (ok, result), retried = self._retried(
            store.finish_and_claim, pending.outcome, job_id, self.worker_name
        )
        if not ok and retried:
            ok = self._outcome_stands(pending.outcome)
        self._log_outcome(pending, ok)
        if result is None and retried:
            result = self._adopt(job_id)
        return result

    # -- the held-back outcome --------------------------------------------------------------

    def _hold(self, done: _Done) -> None:
        with self._pending_lock:
            self._pending, self._pending_at = done, time.monotonic()
        self._ensure_heartbeat()  # its thread writes the outcome should nothing else soon

    def _take_pending(self) -> _Done | None:
        with self._pending_lock:
            pending, self._pending = self._pending, None
        return pending

    def _put_back(self, done: _Done) -> None:
        """Hold `done` again (a write of it failed with the database away), unless a newer
        outcome is held: then it is left to the lease and the sweeper, as a lost write is."""
        with self._pending_lock:
            if self._pending is None:
                self._pending = done
                return
        log.warning("job_id=%s: outcome %s not recorded", done.claim.id, done.outcome.status)

    def flush(self) -> None:
        """Write the held-back outcome now (the worker is about to wait, stop, or run
        something that is not a claim of ours)."""
        pending = self._take_pending()
        if pending is not None:
            self._write_held(pending)

    def _flush_if_old(self) -> None:
        """In the job-heartbeat thread: an outcome held HOLD_MAX already is written alone."""
        with self._pending_lock:
            if self._pending is None or time.monotonic() - self._pending_at < HOLD_MAX:
                return
        self.flush_quietly()

    def _write_held(self, pending: _Done) -> None:
        """A held-back outcome, alone. With the database away past PROSAAS_DB_RETRY it is held
        again for a later write; refused, the row is handed back (`abandon`)."""
        try:
            self._write(pending)
        except Exception as exc:
            if transient(exc):
                self._put_back(pending)
            else:
                self.abandon(pending.claim.id)
            raise

    def flush_quietly(self) -> None:
        """`flush`, a failure logged (see `_write_held` for what becomes of the outcome)."""
        try:
            self.flush()
        except Exception:
            log.exception("could not record the last job's outcome")

    def _write(self, done: _Done) -> bool:
        """`done`'s outcome, retried across a blip; a retry refused because the first try went
        through (its answer lost with the connection) counts as written."""
        ok, retried = self._retried(store.write_outcome, done.outcome)
        if not ok and retried:
            ok = self._outcome_stands(done.outcome)
        return self._log_outcome(done, ok)

    def _outcome_stands(self, outcome: store.Outcome) -> bool:
        with connect(self.rt.engine) as db:
            return store.outcome_stands(db, outcome)

    def _adopt(self, job_id: int) -> store.Claim | None:
        with connect(self.rt.engine) as db:
            claim = store.adopt(db, job_id, self.worker_name)
        if claim is not None:
            log.info("job_id=%s: the claim went through before the connection was lost", job_id)
        return claim

    def after_fork_in_child(self) -> None:
        """A forked work horse must never use the parent's sockets: forget them, unclosed."""
        from prosaas_core.db import dispose_after_fork

        # kept referenced: finalising them would close the parent's sockets
        _INHERITED.append((self._raw, self._db))
        self._raw = self._db = None
        self._owner = threading.get_ident()
        self._pid = os.getpid()
        self._beat = None
        self._beat_stop = threading.Event()
        dispose_after_fork(self.rt.engine)

    # -- the job heartbeat ------------------------------------------------------------------

    def _ensure_heartbeat(self) -> None:
        if self._beat is not None and self._beat.is_alive():
            return
        self._beat = threading.Thread(
            target=self._heartbeat_loop, name="job-heartbeat", daemon=True
        )
        self._beat.start()

    def _heartbeat_loop(self) -> None:
        interval = self.rt.settings.heartbeat_interval
        # slots are renewed three times a lease, the row at the heartbeat interval
        tick = min(interval, self.rt.settings.flow_lease / 3, HOLD_MAX / 2)
        last_beat = time.monotonic()
        while not self._beat_stop.wait(tick):
            self._flush_if_old()
            held = self.held
            if held is not None:
                try:
                    self.rt.flow.renew(held)
                except Exception as exc:
                    log.warning("flow slot renewal failed: %s", type(exc).__name__)
            if time.monotonic() - last_beat < interval - tick / 2:
                continue
            last_beat = time.monotonic()
            ctx = self.current
            if ctx is None:
                continue
            try:
                ctx.heartbeat()
            except JobLost:
                log.warning("JOB LOST job_id=%s: taken over by another worker", ctx.job_id)
            except Exception:
                log.exception("job heartbeat failed for job_id=%s", ctx.job_id)

    def stop(self) -> None:
        self.flush_quietly()
        self._beat_stop.set()
        if self._raw is not None:
            raw, db, self._raw, self._db = self._raw, self._db, None, None
            try:
                if db is not None:
                    db.deallocate()  # the pool's next user never finds our statements
            except Exception:
                raw.invalidate()
                return
            if raw.dbapi_connection is not None:
                set_autocommit(raw.dbapi_connection, self.rt.engine.dialect, False)
            raw.close()

    # -- running one job ---------------------------------------------------------------------

    def run(self, job_id: int, *, slot_at: float | None = None, defer: bool = False) -> Any:
        """Claim job row `job_id`, run its handler, record the outcome; the handler's result.
        With `defer` (the in-process worker), the outcome may be held back for the next claim
        (see the module docstring): the caller then calls `flush` before doing anything else."""
        started = time.monotonic()
        if self._pid != os.getpid():  # a work horse of a forking worker: fresh connections
            self.after_fork_in_child()
        self._deferring = (
            defer
            and threading.get_ident() == self._owner
            and self.rt.engine.dialect.name == "postgresql"
        )
        if not self._deferring:
            self.flush()
        try:
            return self._run(job_id, slot_at, started)
        finally:
            self._deferring = False

    def _run(self, job_id: int, slot_at: float | None, started: float) -> Any:
        claim = self._claim(job_id)
        if claim is None:
            log.info("JOB SKIPPED job_id=%s: not claimable (duplicate or stale delivery)", job_id)
            return None
        log.info(
            "JOB PICKED queue=%r job_id=%s job_type=%s business_id=%s attempt=%s/%s",
            claim.queue,
            claim.id,
            claim.job_type,
            claim.business_id,
            claim.attempt,
            claim.max_attempts,
        )
        jt = self.rt.registry.job_types.get(claim.job_type)
        if jt is None:
            return self._fail(claim, started, f"job type {claim.job_type!r} is not installed", None)
        if claim.cancel_requested:
            return self._finish(claim, started, "cancelled", None, None, None)
        pol = self.rt.flow.policy(jt, claim.business_id)
        if pol is None:
            return self._run_claimed(claim, jt, started)
        try:
            got = self.rt.flow.enter(claim, pol, slot_at=slot_at)
        except RedisError as exc:  # can't tell whether a slot is free: look again later
            got = Refusal("concurrency", f"flow limits unavailable ({type(exc).__name__})", 1.0)
        if isinstance(got, Refusal):
            return self._park(claim, got)
        self.held = got
        try:
            return self._run_claimed(claim, jt, started)
        finally:
            self.held = None
            try:
                self.rt.flow.release(got)
            except Exception as exc:  # the slot's lease runs out on its own
                log.warning("flow slot release failed for job_id=%s: %s", job_id, exc)

    def _park(self, claim: store.Claim, refusal: Refusal) -> None:
        ok = self._retrying(
            store.park, claim.id, claim.fence, refusal.reason, look_again=refusal.retry_after
        )
        if not ok:
            log.warning("JOB LOST job_id=%s: park refused (fenced out)", claim.id)
            return None
        try:
            self.rt.flow.parked(flow_key(claim.job_type, claim.business_id), refusal)
        except RedisError as exc:  # the waker's scan finds it within a lease
            log.warning("flow notice failed for job_id=%s: %s", claim.id, type(exc).__name__)
        log.info(
            "JOB PARKED job_id=%s job_type=%s business_id=%s reason=%r look_again=%.2fs",
            claim.id,
            claim.job_type,
            claim.business_id,
            refusal.reason,
            refusal.retry_after,
        )
        return None

    def _run_claimed(self, claim: store.Claim, jt: JobType, started: float) -> Any:
        job_id = claim.id
        try:
            payload = self._payload(jt, claim.payload)
        except Exception as exc:
            return self._fail(claim, started, f"invalid payload: {exc}", None, final=True)
        ctx = JobContext(
            self.rt,
            claim,
            payload,
            connect=self.connect,
            shutdown=self.shutdown,
            lease=self.lease,
        )
        self.current = ctx
        self._ensure_heartbeat()
        try:
            with deadline(jt.timeout):
                result = jt.handler(ctx)
            if ctx.stopped_for != "shutdown":
                ctx.settle()  # the outcome is written once every batch it counts is on disk
            result = _jsonable(result)
        except JobLost:
            log.warning("JOB LOST job_id=%s: taken over by another worker; outcome dropped", job_id)
            return None
        except JobTimeout as exc:
            return self._fail(claim, started, str(exc), ctx, jt=jt)
        except Exception as exc:
            return self._fail(claim, started, short_traceback(exc), ctx, jt=jt)
        except BaseException:  # SystemExit of a cold shutdown, KeyboardInterrupt
            self.release(ctx)
            raise
        finally:
            self.current = None
        if ctx.lost:
            log.warning("JOB LOST job_id=%s: taken over by another worker; outcome dropped", job_id)
            return None
        if ctx.stopped_for == "cancel":
            return self._finish(claim, started, "cancelled", result, None, ctx)
        if ctx.stopped_for == "shutdown":
            return self._requeue_interrupted(claim, started, ctx, jt)
        return self._finish(claim, started, "succeeded", result, None, ctx)

    @staticmethod
    def _payload(jt: JobType, raw: Any) -> Any:
        if jt.payload_model is None:
            return dict(raw or {})
        return jt.payload_model.model_validate(raw or {})

    def _finish(self, claim, started, status, result, error, ctx) -> Any:
        processed, total = (ctx.processed, ctx.total) if ctx is not None else (None, None)
        outcome = store.Outcome(
            claim.id, claim.fence, status, result, error, processed, total, at=store.utcnow()
        )
        done = _Done(claim, outcome, time.monotonic() - started)
        if self._deferring:
            self._hold(done)
            return result
        return result if self._write(done) else None

    @staticmethod
    def _log_outcome(done: _Done, ok: bool) -> bool:
        claim, outcome = done.claim, done.outcome
        if not ok:
            log.warning(
                "JOB LOST job_id=%s: outcome %s refused (fenced out)", claim.id, outcome.status
            )
            return False
        word = {"succeeded": "DONE", "failed": "FAILED", "cancelled": "CANCELLED"}[outcome.status]
        error = outcome.error
        log.log(
            logging.ERROR if outcome.status == "failed" else logging.INFO,
            "JOB %s job_id=%s job_type=%s business_id=%s attempt=%s duration=%.3fs%s",
            word,
            claim.id,
            claim.job_type,
            claim.business_id,
            claim.attempt,
            done.took,
            f" error={errortext.first_line(error)}" if error else "",
        )
        return True

    def _fail(self, claim, started, error, ctx, *, jt=None, final=False) -> None:
        exc = sys.exc_info()[1]
        # a checkpoint lost in a database crash: run again (a cancel then ends it with the
        # counts that were kept), the attempt not counted
        lost = isinstance(exc, CheckpointLost)
        if ctx is not None and ctx.stopped_for == "cancel" and not lost:
            self._finish(claim, started, "cancelled", None, error, ctx)
            return None
        # called from run()'s except clause: a database that went away under the handler (a
        # restart, a terminated backend) is not the job's fault and does not use an attempt
        infra = not final and jt is not None and (transient(exc) or lost)
        if not infra and (final or jt is None or claim.attempt >= claim.max_attempts):
            self._finish(claim, started, "failed", None, error, ctx)
            return None
        delay = DB_LOST_RETRY if infra else backoff(self.rt, claim.attempt)
        processed, total = (ctx.processed, ctx.total) if ctx is not None else (None, None)
        ok = self._retrying(
            store.requeue,
            claim.id,
            claim.fence,
            delay=delay,
            error=error,
            refund_attempt=infra,
            processed=processed,
            total=total,
        )
        if not ok:
            log.warning("JOB LOST job_id=%s: retry refused (fenced out)", claim.id)
            return None
        from prosaas_core.jobs.delayed import schedule

        schedule(self.rt, claim.id, claim.queue, delay, timeout=jt.timeout)
        why = "a checkpoint lost in a database crash" if lost else "database connection lost"
        log.warning(
            "JOB RETRY job_id=%s job_type=%s business_id=%s attempt=%s/%s duration=%.3fs "
            "retry_in=%.1fs%s error=%s",
            claim.id,
            claim.job_type,
            claim.business_id,
            claim.attempt,
            claim.max_attempts,
            time.monotonic() - started,
            delay,
            f" ({why}: attempt not counted)" if infra else "",
            errortext.first_line(error),
        )
        return None

    def abandon(self, job_id: int) -> None:
        """The worker could not record job `job_id`'s outcome (a write PostgreSQL refused, or
        the database away past PROSAAS_DB_RETRY): hand the row back if it still runs under our
        name, the attempt counted (one whose outcome can never be written ends failed), rather
        than leave it under a lease that stays valid. One try: with the database away, the
        lease lapses meanwhile and the worker hands its jobs back when it renews it."""
        from prosaas_core.db import autocommit
        from prosaas_core.jobs.lease import hand_back
        from prosaas_core.jobs.transport import push_many

        try:
            with autocommit(self.rt.engine) as conn:
                rows = hand_back(
                    conn, self.worker_name, job_id, refund=False, lost="its outcome was refused"
                )
            push_many(self.rt, rows)
        except Exception as exc:
            log.warning("could not hand back job_id=%s: %s", job_id, type(exc).__name__)
            return
        if rows:
            log.warning("JOB RESCUED job_id=%s: its outcome could not be recorded", job_id)

    def release(self, ctx: JobContext) -> None:
        """Hand a running job back to the queue without counting the attempt (the worker is
        going away); it resumes from its checkpoint elsewhere."""
        from prosaas_core.jobs.transport import push

        ok = self._retrying(
            store.requeue,
            ctx.job_id,
            ctx.fence,
            refund_attempt=True,
            processed=ctx.processed,
            total=ctx.total,
        )
        if ok:
            jt = self.rt.registry.job_types.get(ctx.job_type)
            push(self.rt, ctx.job_id, ctx.queue, timeout=jt.timeout if jt else None)
            log.warning("JOB RELEASED job_id=%s: handed back to the queue", ctx.job_id)

    def _requeue_interrupted(self, claim, started, ctx, jt) -> None:
        ok = self._retrying(
            store.requeue,
            claim.id,
            claim.fence,
            refund_attempt=True,
            processed=ctx.processed,
            total=ctx.total,
        )
        if ok:
            from prosaas_core.jobs.transport import push

            push(self.rt, claim.id, claim.queue, timeout=jt.timeout)
            log.info(
                "JOB REQUEUED job_id=%s job_type=%s business_id=%s duration=%.3fs: worker "
                "shutting down, resumes from its checkpoint",
                claim.id,
                claim.job_type,
                claim.business_id,
                time.monotonic() - started,
            )
        return None


def _jsonable(result: Any) -> Any:
    """The handler's result if it is JSON-serialisable; TypeError (a failed attempt) if not."""
    if result is None or isinstance(result, int | float | bool):
        return result
    if _NUL.search(json.dumps(result)):
        raise ValueError("the result holds a NUL character (\\u0000), which jsonb cannot store")
    return result


#: a NUL character in JSON text (an escaped backslash before "u0000" is not one)
_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
#: connections inherited from a forking parent; referenced forever so they are never finalised
_INHERITED: list[Any] = []
_DISPATCHER: Dispatcher | None = None


def configure(rt: Runtime, worker_name: str, shutdown: threading.Event) -> Dispatcher:
    """Install the process's dispatcher (the worker calls this before it starts working)."""
    global _DISPATCHER
    _DISPATCHER = Dispatcher(rt, worker_name, shutdown, prepare=True)
    return _DISPATCHER


def flush() -> None:
    """Write the process's held-back job outcome, if it has one (`Dispatcher.flush_quietly`)."""
    if _DISPATCHER is not None:
        _DISPATCHER.flush_quietly()


def current() -> Dispatcher:
    """The process's dispatcher; one built from the environment when this process is a plain
    `rq worker` rather than `prosaas worker`."""
    global _DISPATCHER
    if _DISPATCHER is None:
        from prosaas_core.db import process_tag
        from prosaas_core.runtime import Runtime

        _DISPATCHER = Dispatcher(Runtime(), f"rq.{process_tag()}", threading.Event())
    return _DISPATCHER


def run_job(job_id: int) -> Any:
    """The RQ entry point: run job row `job_id`. Returns the handler's result."""
    from rq import get_current_job

    rq_job = get_current_job()
    slot_at = rq_job.meta.get("slot_at") if rq_job is not None else None
    return current().run(int(job_id), slot_at=slot_at)
