"""JobContext: what a job handler gets. Its writes to the job row are fenced and throttled."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar, cast

from prosaas_core.errors import ProsaasError
from prosaas_core.jobs import store
from prosaas_core.jobs.dbretry import retry_transient

if TYPE_CHECKING:
    from sqlalchemy import Connection, CursorResult
    from sqlalchemy.orm import Session

    from prosaas_core.limits import Limits
    from prosaas_core.runtime import Runtime
    from prosaas_core.settings import Settings
    from prosaas_core.store import Db, Handle

_T = TypeVar("_T")

#: progress is written at most this often (seconds); the last value is always flushed at the end
PROGRESS_INTERVAL = 0.25
#: should_stop() asks the database about cancellation at most this often (seconds)
CANCEL_POLL_INTERVAL = 1.0


class JobLog(logging.LoggerAdapter):
    """A logger carrying the job's fields: on each record (``record.job_id`` ...) for
    structured handlers, and at the end of each message so a plain log can be grepped."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = self.extra or {}
        fields = " ".join(f"{k}={v}" for k, v in extra.items())
        kwargs["extra"] = {**extra, **kwargs.get("extra", {})}
        return f"{msg} [{fields}]", kwargs


class JobLost(ProsaasError):
    """The job row is no longer this attempt's: the sweeper rescued it (stale heartbeat) and the
    fencing token moved on. The attempt must stop without writing anything else."""


class CheckpointLost(ProsaasError):
    """A checkpoint this attempt wrote with ``durable=False`` is gone: the database crashed
    before it reached the disk, and took the batch written with it. The attempt stops; the
    job runs again from the last checkpoint the database kept, without using an attempt."""


class JobContext:
    """The handler's view of one attempt of one job.

    ``job_id``, ``business_id``, ``job_type``, ``attempt`` (1-based), ``payload`` (the validated
    pydantic model instance, or a dict), ``state`` (saved by the last ``checkpoint``; ``{}`` at
    first), ``session()``, ``db()``, ``progress(done, total=None)``, ``checkpoint(state)``,
    ``connection()``, ``checkpoint_write(...)``, ``settle()``, ``should_stop()`` and ``log``.
    """

    def __init__(
        self,
        rt: Runtime,
        claim: store.Claim,
        payload: Any,
        *,
        connect: Callable[[], AbstractContextManager[Handle]],
        shutdown: threading.Event,
        log: logging.Logger | None = None,
        lease: Any = None,
    ) -> None:
        self.job_id: int = claim.id
        self.business_id: int = claim.business_id
        self.job_type: str = claim.job_type
        self.queue: str = claim.queue
        self.attempt: int = claim.attempt
        self.max_attempts: int = claim.max_attempts
        self.payload: Any = payload
        self.state: dict = dict(claim.state or {})
        self._logger = log
        self._rt = rt
        self._fence = claim.fence
        self._connect = connect
        self._shutdown = shutdown
        self._lock = threading.Lock()
        #: the session of the handler's last ``checkpoint(session=...)`` and the handler's thread
        self._pinned: Session | None = None
        self._owner = threading.get_ident()
        self._cancel = claim.cancel_requested
        self._lost = False
        #: why should_stop() last said True: "cancel" or "shutdown" (None if it never did)
        self.stopped_for: str | None = None
        self.processed: int | None = None
        self.total: int | None = None
        self._dirty = False
        self._last_write = 0.0
        self._last_poll = time.monotonic()
        #: the worker's lease and its generation when this attempt started (see lease.py): an
        #: attempt stops writing once the lease lapsed, even before anyone rescued the job
        self._lease = lease
        self._lease_gen = lease.generation if lease is not None else 0
        #: checkpoint_write's last fused statement: (the caller's statement, shape, fused)
        self._fused: tuple[Any, tuple, Any] | None = None
        #: the JSON of the last checkpoint, when it was written with durable=False and not
        #: settled since (else None): the next checkpoint and `settle` must find it on the row.
        #: Kept as the text written, so a handler changing ``ctx.state`` in place is no loss.
        self._kept: str | None = None

    @cached_property
    def log(self) -> JobLog:
        """The job's logger, built on first use: most trivial handlers never log."""
        return JobLog(
            self._logger or logging.getLogger(f"prosaas.job.{self.job_type}"),
            {"job_id": self.job_id, "business_id": self.business_id, "job_type": self.job_type},
        )

    @property
    def fence(self) -> int:
        return self._fence

    @property
    def settings(self) -> Settings:
        """The worker's settings; plugins read their own keys with ``ctx.settings.get(KEY)``."""
        return self._rt.settings

    @property
    def limits(self) -> Limits:
        """Slots and rate limits shared by every worker (``prosaas_core.limits``)."""
        return self._rt.limits

    def enqueue(self, job_type: str, payload: Any = None) -> Any:
        """Enqueue another job for this job's business (e.g. the parts of a large job, so
        several workers share it). Returns ``prosaas_core.jobs.enqueue.Enqueued``."""
        from prosaas_core.jobs.enqueue import enqueue

        return enqueue(self._rt, job_type, self.business_id, payload)

    @property
    def lost(self) -> bool:
        return self._lost

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A SQLAlchemy session in a transaction: committed on success, rolled back on error."""
        with self._rt.session() as s:
            yield s

    @contextmanager
    def db(self) -> Iterator[Db]:
        """A `prosaas_core.store.Db` in autocommit mode, for the handler's named queries: each
        commits on its own, one round trip (the worker's kept connection in its main thread)."""
        from prosaas_core.store import Db

        with self._connect() as handle:
            yield Db.of(handle)

    def progress(self, done: int, total: int | None = None) -> None:
        """Report `done` of `total` items. Written at most every PROGRESS_INTERVAL seconds."""
        self._check_lost()
        with self._lock:
            self.processed = int(done)
            if total is not None:
                self.total = int(total)
            self._dirty = True
            due = time.monotonic() - self._last_write >= PROGRESS_INTERVAL
        if due:
            self._write()

    def checkpoint(self, state: dict, *, session: Session | None = None) -> None:
        """Save `state` (a JSON object): a later attempt of this job starts with it as
        ``ctx.state``. Raises JobLost when the job is no longer this attempt's, CheckpointLost when
        an earlier ``checkpoint_write(durable=False)`` was lost (see `settle`).

        With `session` (one from ``ctx.session()``), the checkpoint is written in that
        session's transaction, so the work done in it and the checkpoint commit or roll back
        together: an attempt killed at any instant is resumed without redoing or skipping work.
        """
        self._check_lost()
        self.settle()
        self.state = dict(state)
        if session is not None:
            self._pinned = session
        self._write(state=self.state, set_state=True, conn=session)

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A SQLAlchemy ``Connection`` for `checkpoint_write`: on PostgreSQL in autocommit mode
        (each statement commits on its own: no BEGIN/COMMIT round trips); on SQLite in one
        transaction, committed when the block succeeds."""
        from prosaas_core.db import autocommit

        with autocommit(self._rt.engine) as conn:
            yield conn

    def checkpoint_write(
        self,
        conn: Connection,
        statement: Any,
        state: dict,
        *,
        add: dict[str, int] | None = None,
        done: int | None = None,
        total: int | None = None,
        params: dict[str, Any] | None = None,
        durable: bool = True,
    ) -> int:
        """Run `statement` (a SQLAlchemy DELETE or UPDATE) and checkpoint `state`, both or
        neither, fenced on the attempt's claim; returns the rows `statement` touched.

        Each key of `add` gets ``add[key] * rows`` added to its value in `state` (counts that
        are known only once the write ran). `done`/`total` are written as the job's progress
        with it. On PostgreSQL (`conn` from ``ctx.connection()``) this is one statement, one
        round trip: a stale attempt's statement changes nothing. On SQLite, the write then the
        checkpoint in `conn`'s transaction. Raises JobLost when the job is no longer this
        attempt's.

        `params`: values for `statement`'s named ``bindparam()``s. A loop that passes the same
        `statement` object every time with new `params` has the fused statement built and
        compiled once for the attempt, not once per call (names starting ``fenced_`` are
        reserved).

        `durable` False (PostgreSQL): the write commits without waiting for the disk, which
        saves a batch the WAL flush (several ms on most disks). Only for a write whose whole
        effect is in the database and that the job redoes from its checkpoint, such as a lead
        batch: a database crash can lose the last such writes, each with its checkpoint (never
        one without the other). The attempt then stops at its next checkpoint or at `settle`
        (`CheckpointLost`) and the job resumes from what the database kept. The worker
        settles when the handler returns, so the job's end is recorded only once every batch
        is on disk. On SQLite every write is durable."""
        self._check_lost()
        add = add or {}
        if conn.dialect.name != "postgresql":
            rows = cast("CursorResult[Any]", conn.execute(statement, params)).rowcount
            state = {**state, **{k: int(state.get(k, 0)) + f * rows for k, f in add.items()}}
            with self._lock:
                self.processed = self.processed if done is None else int(done)
                self.total = self.total if total is None else int(total)
                self._dirty = done is not None or total is not None
            self.state = dict(state)
            self._write(state=self.state, set_state=True, conn=conn)
            return rows
        # a write after one that did not wait for the disk checks that one is still on the row;
        # every durable=False write has the check (with nothing to check: one statement shape
        # for the attempt, built and compiled once)
        kept = self._kept
        expect = kept is not None or not durable
        fused = self._fused_statement(
            statement, add, done is not None, total is not None, durable, expect
        )
        values = store.fenced_params(self.job_id, self._fence, state, add, done, total, kept)
        if params:
            values.update(params)
        locked, rows, cancel = conn.execute(fused, values).one()[:3]
        if not locked and kept is not None:
            self._refused_with_unsettled(conn)
        written = {**state, **{k: int(state.get(k, 0)) + f * rows for k, f in add.items()}}
        with self._lock:
            self._last_write = self._last_poll = time.monotonic()
            if not locked:
                self._lost = True
            else:
                self._kept = None if durable else json.dumps(written)
                self._cancel = self._cancel or bool(cancel)
                self.processed = self.processed if done is None else int(done)
                self.total = self.total if total is None else int(total)
                self._dirty = False
                self.state = written
        self._check_lost()
        return int(rows)

    def _fused_statement(
        self,
        statement: Any,
        add: dict[str, int],
        done: bool,
        total: bool,
        durable: bool,
        expect: bool,
    ) -> Any:
        """`store.fenced_statement` around `statement`, built once per statement object (and
        shape of the checkpoint): the statement of the last call is kept and reused."""
        key = (tuple(add.items()), done, total, durable, expect)
        last = self._fused
        if last is not None and last[0] is statement and last[1] == key:
            return last[2]
        fused = store.fenced_statement(
            statement,
            add,
            processed=done,
            total=total,
            durable=durable,
            expect_state=expect,
        )
        self._fused = (statement, key, fused)
        return fused

    def _refused_with_unsettled(self, conn: Connection) -> None:
        """A write that expected the last (not durable) checkpoint was refused: CheckpointLost
        when the job is still this attempt's (so the checkpoint is what went missing), else
        return and let the caller mark the attempt lost."""
        if store.is_ours(conn, self.job_id, self._fence):
            raise self._checkpoint_lost()

    def _checkpoint_lost(self) -> CheckpointLost:
        return CheckpointLost(
            f"job {self.job_id}: a checkpoint not yet on disk was lost (database crash)"
        )

    def settle(self) -> None:
        """Make sure the attempt's checkpoints written with ``durable=False`` are on disk: one
        durable write that also checks the last one is still on the row. Raises
        `CheckpointLost` when a database crash lost it, `JobLost` when the job is no longer
        this attempt's. Nothing to do (no round trip) when every checkpoint was durable. The
        worker calls it when the handler returns; call it before a side effect outside the
        database that must not happen unless the batches before it are kept."""
        expected = self._kept
        if expected is None:
            return
        self._check_lost()
        pinned = self._pinned
        if pinned is not None and pinned.in_transaction():
            # that transaction holds the job row: check there; it is on disk only once that
            # commits, so the check stays due (the worker's settle repeats it on its own)
            kept = store.settle(pinned, self.job_id, self._fence, expected)
            on_disk = False
        else:
            kept = self._retried(
                lambda own: store.settle(own, self.job_id, self._fence, expected), "settle"
            )
            on_disk = True
        if kept is None:
            self._lost = True
            self._check_lost()
        if not kept:
            raise self._checkpoint_lost()
        if on_disk:
            self._kept = None

    def should_stop(self) -> bool:
        """True when the job was cancelled, or the worker is shutting down: return soon, after
        a checkpoint, and the job ends cancelled or resumes elsewhere from the checkpoint."""
        if self._lost or self._lease_lapsed():
            return True
        if self._shutdown.is_set():
            self.stopped_for = self.stopped_for or "shutdown"
            return True
        if not self._cancel and time.monotonic() - self._last_poll >= CANCEL_POLL_INTERVAL:
            self._write()
        if self._cancel:
            self.stopped_for = "cancel"
            return True
        return self._lost

    def heartbeat(self) -> None:
        """Called by the worker's job heartbeat thread: prove the attempt is alive."""
        if not self._lost:
            self._write()

    # -- internals -------------------------------------------------------------------------

    def _lease_lapsed(self) -> bool:
        """True (and the attempt lost) once the worker's lease lapsed: the sweeper may hand the
        job to another worker any moment, so this attempt must not write again."""
        if self._lease is not None and not self._lost and not self._lease.valid(self._lease_gen):
            self._lost = True
            self.log.warning("worker lease lapsed: this attempt stops writing")
        return self._lost

    def _retried(self, write: Callable[[Handle], _T], what: str) -> _T:
        """`write` on a connection of our own: again on a fresh one across a database blip,
        for up to PROSAAS_DB_RETRY seconds, unless the lease lapses meanwhile."""

        def once() -> _T:
            with self._connect() as own:
                return write(own)

        budget = self._rt.settings.db_retry
        return retry_transient(
            once, budget, what=f"job {self.job_id} {what}", give_up=self._lease_lapsed
        )

    def _check_lost(self) -> None:
        if self._lost or self._lease_lapsed():
            raise JobLost(f"job {self.job_id} was taken over by another worker")

    def _write(
        self,
        *,
        state: Any = None,
        set_state: bool = False,
        conn: Session | Connection | None = None,
    ) -> None:
        """Heartbeat (+ pending progress, + state) on the job row, fenced; on `conn` (a
        session in the caller's transaction) when given, else on a connection of its own.

        After ``checkpoint(session=s)`` the handler's open transaction holds the job row's lock:
        the handler's own later writes go through `s` too (another connection would wait for
        that lock forever), and the heartbeat thread skips its beat until `s` commits."""
        with self._lock:
            if conn is None and self._pinned is not None and self._pinned.in_transaction():
                if threading.get_ident() != self._owner:
                    return
                conn = self._pinned
            processed, total = (self.processed, self.total) if self._dirty else (None, None)
            self._dirty = False
            self._last_write = self._last_poll = time.monotonic()
            values = dict(processed=processed, total=total, state=state, set_state=set_state)
            self._check_lost()
            if conn is not None:
                cancel = store.touch(conn, self.job_id, self._fence, **values)
            else:
                cancel = self._retried(
                    lambda own: store.touch(own, self.job_id, self._fence, **values), "write"
                )
            if cancel is None:
                self._lost = True
            else:
                self._cancel = self._cancel or cancel
        self._check_lost()
