"""Pushes behind the answer: ``POST /api/jobs`` commits the job's row and answers 202 at once;
one thread of the process pushes the rows its requests committed meanwhile, many per round trip.

A request no longer waits for Redis (a hung Redis costs it nothing, not a push timeout), and
under load the pushes of many requests share one round trip. Nothing accepted can be lost by
it: the row is committed before the answer, so a push that fails, or never happens because the
process died first, leaves a ``queued`` row that the sweeper pushes (as it does for a push that
met Redis away). The log lines are the ones of an inline push, written by the pusher thread:
"Enqueued job_id=..." once pushed, "Accepted job_id=...: committed, not pushed" when not.

The thread starts with the first job and ends after IDLE seconds without one; a process that
exits normally pushes what is still pending first (up to FLUSH_AT_EXIT seconds).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, NamedTuple

from prosaas_core.jobs import pushlog
from prosaas_core.jobs.enqueue import log_push
from prosaas_core.jobs.transport import (
    PUSH_BATCH,
    push_batch,
    push_client,
    push_failed,
    skipping,
)

if TYPE_CHECKING:
    from prosaas_core.runtime import Runtime

log = logging.getLogger("prosaas.jobs")

#: seconds the pusher thread waits for a job before it ends (the next job starts another)
IDLE = 5.0
#: seconds from one batch to the next at least, while jobs keep coming
LINGER = 0.004
#: jobs waiting for the pusher beyond which new ones are left to the sweeper (Redis hung)
MAX_PENDING = 20_000
#: seconds a normal exit waits for the pending pushes
FLUSH_AT_EXIT = 3.0


class Pending(NamedTuple):
    job_id: int
    queue: str
    timeout: float | None
    job_type: str
    business_id: int


class Pusher:
    """The pusher of one runtime in one process."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = weakref.ref(rt)
        self._pid = os.getpid()
        self._cond = threading.Condition()
        self._pending: list[Pending] = []
        self._busy = False  # a batch is being pushed
        self._thread: threading.Thread | None = None
        self._dropped = 0

    def submit(self, job: Pending) -> bool:
        """Hand a committed row over for pushing; never waits for Redis. Beyond MAX_PENDING
        waiting, it is left to the sweeper. False when no thread could start: the caller's
        to push."""
        with self._cond:
            if len(self._pending) >= MAX_PENDING:
                self._dropped += 1
                dropped = self._dropped
            else:
                dropped = 0
                self._pending.append(job)
                if self._thread is not None:
                    self._cond.notify_all()  # all: a flush may be waiting too
                    return True
                thread = threading.Thread(target=self._run, name="prosaas-pusher", daemon=True)
                try:
                    thread.start()
                except RuntimeError:  # no thread to be had (a process at its limit)
                    self._pending.remove(job)
                    log.warning("no pusher thread could start; pushing job %s inline", job.job_id)
                    return False
                self._thread = thread
                return True
        # one line per thousand: Redis is hung or gone, and the sweeper has them all
        if dropped % 1000 == 1:
            log.warning(
                "Accepted job_id=%s job_type=%s business_id=%s queue=%r: committed, not "
                "pushed (%d jobs wait for a push already); the sweeper pushes it "
                "(%d left to it since the pushes last worked)",
                job.job_id,
                job.job_type,
                job.business_id,
                job.queue,
                MAX_PENDING,
                dropped,
            )
        return True

    def flush(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for every pending push to be done; True if they are."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    log.warning(
                        "%d accepted job(s) not pushed within %gs; the sweeper pushes them",
                        len(self._pending) + self._busy,
                        timeout,
                    )
                    return False
                self._cond.wait(left)
        return True

    def _run(self) -> None:
        pause = LINGER
        try:
            while True:
                try:
                    self._loop()  # returns once idle, the thread given up under the lock
                    return
                except Exception:  # a bug: carry on, the pending jobs still need pushing
                    log.exception("the pusher failed; it carries on in %gs", pause)
                    time.sleep(pause)
                    pause = min(2 * pause, 1.0)  # a bug that recurs: a line a second at most
        finally:
            with self._cond:
                # only a thread that still owns the pusher: one that idled out may already
                # have a successor, whose state is not this thread's to touch
                if self._thread is threading.current_thread():
                    self._thread = None
                    self._busy = False
                self._cond.notify_all()

    def _loop(self) -> None:
        last = float("-inf")  # monotonic start of the last batch
        while True:
            # under load, one batch per LINGER at most: the jobs of many requests share each
            # round trip; a pusher that was idle pushes at once
            lull = last + LINGER - time.monotonic()
            if lull > 0:
                time.sleep(lull)
            with self._cond:
                self._busy = False
                self._cond.notify_all()  # a flush waiting for the last batch
                if not self._pending:
                    self._cond.wait(IDLE)
                if not self._pending:
                    self._thread = None  # under the lock: a submit from now on starts one
                    return
                batch = self._pending[:PUSH_BATCH]
                del self._pending[:PUSH_BATCH]
                self._busy = True
            last = time.monotonic()
            rt = self._rt()
            if rt is None:  # the runtime is gone, and its pool with it
                log.warning("%d accepted job(s) not pushed (their runtime is closed); the "
                            "sweeper pushes them", len(batch))  # fmt: skip
                continue
            try:
                if _push_batch(rt, batch):
                    with self._cond:
                        self._dropped = 0
            except Exception:  # never lose the thread: the rows are committed
                log.exception("pushing %d accepted job(s) failed; the sweeper pushes them",
                              len(batch))  # fmt: skip
            del rt  # held only while pushing: the thread keeps no runtime alive


def _push_batch(rt: Runtime, batch: list[Pending]) -> bool:
    """One round trip for the whole batch, logged per job as an inline push would be; True
    when it was pushed."""
    from redis.exceptions import RedisError

    first = batch[0].job_id
    started = time.monotonic()
    pushed = False
    if not skipping(rt, first):
        try:
            push_batch(push_client(rt), [(j.job_id, j.queue, j.timeout) for j in batch])
            pushed = True
        except RedisError as exc:
            for job in batch:
                push_failed(rt, job.job_id, exc, started)
    if pushed:
        pushlog.pushed(rt)
    for job in batch:
        log_push(job.job_id, job.job_type, job.business_id, job.queue, pushed)
    return pushed


_pushers: weakref.WeakKeyDictionary[Any, Pusher] = weakref.WeakKeyDictionary()
_pushers_lock = threading.Lock()


def pusher(rt: Runtime) -> Pusher:
    """The pusher of `rt` in this process (a forked child gets its own)."""
    found = _pushers.get(rt)
    if found is None or found._pid != os.getpid():
        with _pushers_lock:
            found = _pushers.get(rt)
            if found is None or found._pid != os.getpid():
                found = _pushers[rt] = Pusher(rt)
    return found


def push_behind(rt: Runtime, job: Pending) -> bool:
    """Push `job` (a committed ``queued`` row) from the process's pusher thread. False when
    the pusher could not take it: then push it inline (``transport.push``)."""
    return pusher(rt).submit(job)


def flush(rt: Runtime, timeout: float = FLUSH_AT_EXIT) -> bool:
    """Wait for `rt`'s pending pushes in this process; True when none is left."""
    found = _pushers.get(rt)
    return found is None or found._pid != os.getpid() or found.flush(timeout)


@atexit.register
def _flush_all() -> None:
    # a normal exit (gunicorn's graceful stop, a script's end) pushes what its requests accepted
    with _pushers_lock:
        pushers = list(_pushers.values())
    deadline = time.monotonic() + FLUSH_AT_EXIT  # one wait for them all, however many
    for found in pushers:
        if found._pid == os.getpid():
            found.flush(max(0.0, deadline - time.monotonic()))
