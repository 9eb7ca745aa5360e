"""The worker's lean per-job path: a prosaas job costs one Redis round trip, not twenty.

RQ stays the transport: jobs are enqueued by RQ (``transport.push``), and the worker registers,
heartbeats and dies as an RQ worker, so ``rq info`` and ``Worker.all`` show it. What RQ does per
job on top of that (an Execution record, the started/finished registries, a result stream
entry, per-job worker heartbeats and counters, the job hash's status walk) prosaas never reads:
the job row is the state, the claim and its fence decide who runs it, the lease and the sweeper
rescue it. So for a ``prosaas-<id>`` job the worker runs one Lua script per job (POP_SCRIPT) that

1. deletes the previous delivery's job hash if it is still this worker's (``started`` under our
   name: a job the handler re-pushed meanwhile is ``queued`` again and is kept);
2. answers "suspended" when ``rq suspend`` is in force (RQ's check, without its own round trip);
3. pops the first job id of the ordered queues whose hash exists, marks the hash ``started``
   under our name (so the sweeper, which trusts only ``queued`` hashes, re-pushes the row should
   this worker die before its claim) with a day's TTL (a hash orphaned by a kill between the
   job's end and the next pop goes away), and returns its ``meta`` and ``timeout``.

Popping and marking are one atomic step, so no moment exists where the id is in no list while
its hash still says ``queued`` (the sweeper would trust that hash and never re-push the row).
An idle worker on one queue waits with ``BLMOVE q q LEFT LEFT`` (a rotation that moves
nothing) and then pops with the script; on several queues it waits with RQ's ``BLPOP`` and marks
what it got at once (MARK_SCRIPT), RQ's own window for several queues, one round trip wide.

The RQ worker's record is kept: state ``busy``/``idle`` written on change, the heartbeat and the
job counters (``rq info``'s "jobs: N finished") sent at most every HEARTBEAT_EVERY seconds in one
pipeline. A job that is not prosaas's (another RQ function enqueued on our queues) runs through
RQ's own path, unchanged.

The in-process worker lets the dispatcher hold a job's outcome back for the next job's claim
(one PostgreSQL commit per job, ``dispatch``'s docstring); it flushes the outcome before each
wait (an empty pop, a suspension, Redis unreachable), before a job of RQ's path, and at
teardown, so an outcome is never held while nothing else happens. The forking worker's work
horse exits after its job and so never holds one back.

Pinned to RQ 3.0 (``setup.cfg``): the overridden methods are
``BaseWorker.check_for_suspension``, ``dequeue_job_and_maintain_ttl``, ``heartbeat``,
``execute_job`` and ``teardown``, called by ``work()`` as ``dequeue -> execute_job ->
heartbeat``; the key names come from RQ's classes. RQ's
``_shutdown`` decides warm (finish the job) or immediate stop by the local state, so the local
state is ``busy`` from before the pop until the job ends. tests/test_worker_lean.py pins these.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis
from rq.exceptions import StopRequested
from rq.job import Job
from rq.suspension import WORKERS_SUSPENDED
from rq.utils import get_version, now, utcformat
from rq.worker import WorkerStatus

if TYPE_CHECKING:
    from rq import Queue, Worker

    _Base = Worker
else:
    _Base = object

log = logging.getLogger("prosaas.worker")

#: the RQ job ids prosaas pushes (transport.rq_job_id)
PREFIX = "prosaas-"
#: seconds between two RQ worker heartbeats while draining (RQ's worker TTL is minutes)
HEARTBEAT_EVERY = 5.0
#: TTL of a delivered job's hash: it is deleted after the job, this only bounds an orphan's life
DELIVERED_TTL = 86400

_CLEAN_PREVIOUS = """
local prev = ARGV[4]
if prev ~= '' then
  local f = redis.call('HMGET', prev, 'status', 'worker_name')
  if f[1] == 'started' and f[2] == ARGV[2] then redis.call('DEL', prev) end
end
"""
_MARK = """
local function mark(q, id)
  local key = ARGV[5] .. id
  local f = redis.call('HMGET', key, 'status', 'meta', 'timeout')
  if not f[1] then return nil end
  redis.call('HSET', key, 'status', 'started', 'worker_name', ARGV[2], 'started_at', ARGV[3])
  redis.call('EXPIRE', key, ARGV[6])
  if ARGV[7] == '1' then redis.call('HSET', ARGV[1], 'state', 'busy') end
  return {q, id, f[2] or '', f[3] or ''}
end
"""
#: KEYS: the queue keys in order. ARGV: worker key, worker name, now (RQ format), previous job
#: key or '', job key prefix, delivered TTL, '1' to write state busy. Returns {queue key, id,
#: meta, timeout}, 'suspended', or false (nothing queued).
POP_SCRIPT = (
    _CLEAN_PREVIOUS
    + _MARK
    + """
if redis.call('EXISTS', ARGV[8]) == 1 then return 'suspended' end
for _, q in ipairs(KEYS) do
  while true do
    local id = redis.call('LPOP', q)
    if not id then break end
    local got = mark(q, id)
    if got then return got end
  end
end
return false
"""
)
#: the same ARGV and KEYS[1], the queue key BLPOP answered; ARGV[9]: the id it popped
MARK_SCRIPT = (
    _MARK
    + """
return mark(KEYS[1], ARGV[9]) or false
"""
)


@dataclass(frozen=True, slots=True)
class Delivery:
    """A prosaas job taken off an RQ queue: what running it needs, without RQ's Job object."""

    id: str  # the RQ id, prosaas-<row id>
    job_id: int
    queue: str
    slot_at: float | None
    timeout: int


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


#: seconds between two polls of the worker's command channel (RQ's thread)
PUBSUB_POLL = 1.0


class LeanMixin(_Base):
    """RQ worker methods that run prosaas jobs on the lean path (see the module docstring)."""

    _lean_previous = ""  # the last delivery's job hash key, deleted by the next pop
    _lean_redis_state: str | None = None  # the state last written to the worker's hash
    _lean_last_beat = 0.0
    _lean_done = 0  # jobs finished since the last heartbeat, for rq info's counter
    _lean_failed = 0
    _lean_burst = False
    #: the job's outcome may wait for the next claim (never in a work horse, which exits)
    lean_defer_outcomes = True

    # -- RQ's hooks -----------------------------------------------------------------------------

    def check_for_suspension(self, burst: bool) -> None:
        """Asked by the pop script instead (one round trip fewer per job)."""

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        """RQ's heartbeat when RQ gives a TTL or a pipeline; the work loop's after every job is
        sent at most every HEARTBEAT_EVERY seconds, with the job counters, in one pipeline."""
        if timeout is not None or pipeline is not None:
            super().heartbeat(timeout, pipeline)
            return
        if time.monotonic() - self._lean_last_beat < HEARTBEAT_EVERY:
            return
        self._lean_beat()

    def _lean_beat(self) -> None:
        with self.connection.pipeline() as p:
            super().heartbeat(None, p)
            if self._lean_done:
                p.hincrby(self.key, "successful_job_count", self._lean_done)
            if self._lean_failed:
                p.hincrby(self.key, "failed_job_count", self._lean_failed)
            p.execute()
        self._lean_done = self._lean_failed = 0
        self._lean_last_beat = time.monotonic()

    def subscribe(self) -> None:
        """RQ's subscription to the worker's command channel, its thread polling every
        PUBSUB_POLL seconds instead of RQ's 60: redis-py 8.2's ``stop()`` of that thread waits
        for it, and a thread that met the unsubscribe between two polls slept out its poll
        (a worker's exit took up to a minute)."""
        self.log.info("Worker %s: subscribing to channel %s", self.name, self.pubsub_channel_name)
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(  # type: ignore[assignment]
            sleep_time=PUBSUB_POLL, daemon=True, exception_handler=self._pubsub_exception_handler
        )

    def teardown(self) -> None:
        if not self.is_horse:
            self._lean_flush()
        if not self.is_horse and (self._lean_done or self._lean_failed):
            try:
                self._lean_beat()
            except redis.exceptions.RedisError:
                pass  # the counters are a display; the worker is going away
        super().teardown()

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Any, Queue] | None:
        """The next job of our queues, as RQ's work loop wants it: ``(job, queue)``, or None when
        there is none (burst) or the worker was idle `max_idle_time` seconds. A prosaas job
        comes back as a Delivery, any other as RQ's Job."""
        self.procline("Listening on " + ",".join(self.queue_names()))
        self._lean_burst = timeout is None
        keys = [q.key for q in self._ordered_queues]
        idle_since = time.monotonic()
        wait = 1.0
        while True:
            try:
                got = self._lean_pop(keys)
                if got is not None:
                    return got
                if timeout is None:  # burst: nothing left
                    return None
                block = timeout
                if max_idle_time is not None:
                    left = max_idle_time - (time.monotonic() - idle_since)
                    if left <= 0:
                        return None
                    block = max(1, min(timeout, int(left)))
                got = self._lean_wait(keys, block)
                if got is not None:
                    return got
                wait = 1.0
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                self._state = WorkerStatus.IDLE
                self._lean_flush()  # PostgreSQL may well be there while Redis is not
                self.log.error(
                    "Worker %s: could not connect to Redis instance: %s retrying in %d seconds...",
                    self.name,
                    exc,
                    wait,
                )
                time.sleep(wait)
                wait = min(wait * self.exponential_backoff_factor, self.max_connection_wait_time)

    def execute_job(self, job: Any, queue: Queue) -> None:
        if not isinstance(job, Delivery):
            self._lean_flush()
            super().execute_job(job, queue)
            self._lean_redis_state = None  # RQ wrote the state itself
            return
        self._lean_previous = Job.key_for(job.id)
        try:
            self._lean_run(job)
        finally:
            self._state = WorkerStatus.IDLE  # locally: the hash says busy until we go idle

    # -- the lean path --------------------------------------------------------------------------

    def _lean_args(self) -> list[Any]:
        return [
            self.key,
            self.name,
            utcformat(now()),
            self._lean_previous,
            Job.redis_job_namespace_prefix,
            DELIVERED_TTL,
            "1" if self._lean_redis_state != WorkerStatus.BUSY else "0",
            WORKERS_SUSPENDED,
        ]

    def _lean_pop(self, keys: list[str]) -> tuple[Any, Queue] | None:
        """The pop script: the next job, or None (after saying idle) when there is none."""
        while True:
            # busy before the pop: a SIGTERM meanwhile waits for the job we may be taking
            self._state = WorkerStatus.BUSY
            answer = self._lean_script("pop")(keys=keys, args=self._lean_args())
            self._lean_previous = ""
            if answer != b"suspended":
                break
            self._state = WorkerStatus.IDLE
            self._lean_flush()
            super().check_for_suspension(self._lean_burst)  # waits, or ends a burst
        if answer:
            self._lean_redis_state = WorkerStatus.BUSY
            return self._lean_delivered(answer)
        self._lean_idle()
        return None

    def _lean_idle(self) -> None:
        """Nothing to do: say so in the worker's hash (once), and beat if due. A stop asked for
        while we were busy popping (RQ only noted it) is honoured now, before any wait."""
        self._state = WorkerStatus.IDLE
        self._lean_flush()
        self._lean_stop_if_requested()
        if self._lean_redis_state != WorkerStatus.IDLE:
            self.connection.hset(self.key, "state", WorkerStatus.IDLE)
            self._lean_redis_state = WorkerStatus.IDLE
        if self._lean_done or self._lean_failed:
            self._lean_beat()  # rq info's counters are right while we wait
        else:
            self.heartbeat()

    def _lean_stop_if_requested(self) -> None:
        """RQ's signal handler only notes a SIGTERM that comes while the state is busy (we are
        busy from before each pop), and RQ's loop looks at the note between jobs only: without
        this an empty pop would go back to blocking for minutes with the stop pending."""
        if self._stop_requested:
            raise StopRequested()

    def _lean_wait(self, keys: list[str], timeout: int) -> tuple[Any, Queue] | None:
        """Block until work arrives or `timeout` passes (None then). One queue: a rotation that
        takes nothing, then the pop script; several: RQ's BLPOP, the popped id marked at once."""
        self.log.debug("Worker %s: waiting on %s", self.name, ",".join(keys))
        if len(keys) == 1 and get_version(self.connection) >= (6, 2, 0):
            if self.connection.blmove(keys[0], keys[0], timeout, "LEFT", "LEFT") is None:
                self._lean_beat()  # RQ beats around every wait
                return None
            return self._lean_pop(keys)
        popped = self.connection.blpop(keys, timeout)
        if popped is None:
            self._lean_beat()
            return None
        key, rq_id = popped
        self._state = WorkerStatus.BUSY
        answer = self._lean_script("mark")(keys=[_text(key)], args=[*self._lean_args(), rq_id])
        if not answer:  # its hash is gone: nothing to run, as RQ skips it
            self._state = WorkerStatus.IDLE
            self._lean_stop_if_requested()
            return None
        self._lean_redis_state = WorkerStatus.BUSY
        return self._lean_delivered(answer)

    def _lean_delivered(self, answer: list[Any]) -> tuple[Any, Queue]:
        qkey, rq_id = _text(answer[0]), _text(answer[1])
        meta, timeout = answer[2], answer[3]
        queue = next(q for q in self._ordered_queues if q.key == qkey)
        self.reorder_queues(reference_queue=queue)
        if not rq_id.startswith(PREFIX):  # not ours: RQ's own path
            return Job.fetch(rq_id, connection=self.connection, serializer=self.serializer), queue
        slot_at = (self.serializer.loads(meta) or {}).get("slot_at") if meta else None
        secs = int(_text(timeout)) if timeout else -1
        return Delivery(rq_id, int(rq_id.removeprefix(PREFIX)), queue.name, slot_at, secs), queue

    def _lean_run(self, d: Delivery) -> None:
        """Run the delivery in this process (the forking worker runs it in a work horse)."""
        if d.timeout > 0 and d.timeout + 60 > self.worker_ttl:
            # as RQ's prepare_job_execution: the worker's record outlives a long job
            with self.connection.pipeline() as p:
                super().heartbeat(d.timeout + 60, p)
                p.execute()
        if self._lean_perform(d):
            self._lean_done += 1
        else:
            self._lean_failed += 1

    def _lean_perform(self, d: Delivery) -> bool:
        """Run the job row (dispatch claims it, runs the handler, records the outcome) under
        RQ's backstop timeout, as RQ's perform_job would. False when the worker itself failed
        (the database unreachable past its retries, a write it refused): the row is handed
        back (`Dispatcher.abandon`; in a work horse, by its parent), or failing that the lease
        or the sweeper takes it from there."""
        from rq.timeouts import JobTimeoutException

        from prosaas_core.jobs import dispatch

        self.procline(f"Processing {d.id} from {d.queue} since {time.time()}")
        defer = self.lean_defer_outcomes and not self.is_horse
        try:
            if d.timeout > 0:
                with self.death_penalty_class(d.timeout, JobTimeoutException, job_id=d.id):
                    dispatch.current().run(d.job_id, slot_at=d.slot_at, defer=defer)
            else:
                dispatch.current().run(d.job_id, slot_at=d.slot_at, defer=defer)
        except Exception:
            log.exception("job_id=%s: the worker failed outside the handler", d.job_id)
            if not self.is_horse:  # a work horse's parent hands the job back itself
                dispatch.current().abandon(d.job_id)
            return False
        return True

    def _lean_flush(self) -> None:
        """Write the held-back outcome of the last job (see the module docstring)."""
        from prosaas_core.jobs import dispatch

        dispatch.flush()

    def _lean_script(self, which: str):
        """redis-py's Script (EVALSHA, loaded again after a Redis restart), made once."""
        scripts = self.__dict__.setdefault("_lean_scripts", {})
        if which not in scripts:
            source = POP_SCRIPT if which == "pop" else MARK_SCRIPT
            scripts[which] = self.connection.register_script(source)
        return scripts[which]
