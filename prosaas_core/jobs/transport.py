"""Redis/RQ transport. The RQ job carries only the row id; the row is the source of truth.

The push after an enqueue's commit uses the runtime's ``request_redis``, a client with a short
socket timeout (``PROSAAS_PUSH_TIMEOUT``): a hung Redis (one that accepts connections but stops
answering) costs a request at most that long, and after a push that failed slowly the next
pushes of this process skip Redis for a moment (they would only wait as long again). A refused
connection (Redis down or restarting) costs a millisecond, so it skips nothing: the first push
after Redis is back goes through, instead of waiting for the sweeper's next full sweep. A row
that was not pushed is committed and ``queued``: the sweeper pushes it. (The jobs API pushes
behind its answers, from a thread of its own: ``pusher``.)
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prosaas_core.jobs import pushlog

if TYPE_CHECKING:
    import redis
    from redis.commands.core import Script
    from rq import Queue

    from prosaas_core.runtime import Runtime

log = logging.getLogger("prosaas.jobs")

DISPATCH = "prosaas_core.jobs.dispatch.run_job"
#: seconds the pushes of a process skip Redis after one failed slowly
SKIP_AFTER_FAILURE = 2.0
#: a failed push that took this long (or PROSAAS_PUSH_TIMEOUT / 2, if less) failed slowly
SLOW_FAILURE = 0.2
#: jobs per pipeline when many are pushed at once (the sweeper after a flush, the delayed pump)
PUSH_BATCH = 500

# RQ Queue objects per Redis client and queue name. Building a Queue is cheap, but a new one
# asks the server for its version (an INFO round trip) on its first push; a reused one asks once.
_queues: weakref.WeakKeyDictionary[Any, dict[str, Queue]] = weakref.WeakKeyDictionary()
_queues_lock = threading.Lock()
# when each runtime's pushes may try Redis again
_skip_until: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()


def rq_job_id(job_id: int) -> str:
    """The RQ id of a job row: deterministic, so the sweeper can ask Redis whether it holds it."""
    return f"prosaas-{job_id}"


def rq_queue(connection: Any, name: str) -> Queue:
    """The RQ queue `name` on `connection`, built once per client."""
    try:
        return _queues[connection][name]
    except (KeyError, TypeError):  # TypeError: a client that cannot be weakly referenced
        pass
    from rq import Queue

    queue = Queue(name, connection=connection)
    with _queues_lock:
        try:
            _queues.setdefault(connection, {})[name] = queue
        except TypeError:
            pass
    return queue


def push_client(rt: Runtime) -> redis.Redis:
    """The runtime's Redis client for pushes: same server, short timeouts."""
    return rt.request_redis


def _rq_timeout(timeout: float | None) -> int:
    # the handler's own timeout is enforced by dispatch; RQ's is a backstop
    return int(timeout) + 60 if timeout else -1


#: job-hash fields that differ from one push to the next; every other field is the same for
#: all jobs of one (queue, timeout)
_PER_JOB = ("created_at", "enqueued_at", "data", "description")


@dataclass(frozen=True, slots=True)
class _LeanPush:
    """One EVALSHA that writes what RQ's enqueue pipeline writes (SADD rq:queues, HSET of the
    job hash, RPUSH of the id) for one (queue, timeout)."""

    script: Script
    queues_key: str
    queue_key: str
    dumps: Callable[[Any], bytes]


# the lean push script of each (queue, RQ timeout), per Redis client
_lean: weakref.WeakKeyDictionary[Any, dict[tuple[str, int], _LeanPush]] = (
    weakref.WeakKeyDictionary()
)


def _lua(raw: bytes) -> str:
    """`raw` as a Lua string literal: every byte as a decimal escape, so nothing in it can
    end the literal."""
    return '"' + "".join(f"\\{b}" for b in raw) + '"'


def _lean_push(client: Any, queue: str, rq_timeout: int) -> _LeanPush:
    """The lean push of (`queue`, `rq_timeout`), built once per client.

    The fields every job shares are taken from RQ itself (``Job.to_dict`` of a job created as
    `_enqueue` creates one) and written into the script, so the hash is the one RQ would write;
    only the timestamps, the data (the pickled call) and the description are sent per push.
    """
    key = (queue, rq_timeout)
    try:
        return _lean[client][key]
    except KeyError:
        pass
    from rq.job import JobStatus
    from rq.utils import now

    q = rq_queue(client, queue)
    job = q.create_job(
        DISPATCH,
        args=(0,),
        job_id=rq_job_id(0),
        timeout=rq_timeout,
        result_ttl=300,
        failure_ttl=86400,
        description="",
        status=JobStatus.QUEUED,
    )
    job.origin = q.name
    job.enqueued_at = now()
    shared = {k: v for k, v in job.to_dict().items() if k not in _PER_JOB and v is not None}
    encode = client.get_encoder().encode  # the bytes redis-py would send for each value
    fields = ", ".join(f"{_lua(encode(k))}, {_lua(encode(v))}" for k, v in shared.items())
    script = client.register_script(
        # KEYS: rq:queues, the queue, the job hash; ARGV: id, created_at, data, description
        # a hash left by an earlier delivery (a re-push: hand-back, sweep) goes first: its meta
        # (a slot admitted then) and the day's TTL the worker gave it must not carry over
        "redis.call('DEL', KEYS[3])\n"
        "redis.call('SADD', KEYS[1], KEYS[2])\n"
        f"redis.call('HSET', KEYS[3], {fields}, 'created_at', ARGV[2], 'enqueued_at', ARGV[2],"
        " 'data', ARGV[3], 'description', ARGV[4])\n"
        "return redis.call('RPUSH', KEYS[2], ARGV[1])"
    )
    lean = _LeanPush(script, q.redis_queues_keys, q.key, job.serializer.dumps)
    with _queues_lock:
        lean = _lean.setdefault(client, {}).setdefault(key, lean)
    return lean


#: one lean push: its script, keys and arguments
LeanCall = tuple[_LeanPush, tuple[str, ...], tuple[Any, ...]]


def _lean_call(
    client: Any, job_id: int, queue: str, timeout: float | None, created_at: str | None = None
) -> LeanCall:
    """The script call that pushes one job as RQ's enqueue would (`created_at`: RQ's
    timestamp of the push, when the caller has one for a whole batch)."""
    from rq.job import Job
    from rq.utils import now, utcformat

    lean = _lean_push(client, queue, _rq_timeout(timeout))
    rq_id = rq_job_id(job_id)
    # what Job.to_dict stores as data: the compressed serialized (func, instance, args, kwargs)
    data = zlib.compress(lean.dumps((DISPATCH, None, (job_id,), {})))
    keys = (lean.queues_key, lean.queue_key, Job.key_for(rq_id))
    return lean, keys, (rq_id, created_at or utcformat(now()), data, f"{DISPATCH}({job_id})")


def _push_lean(client: Any, job_id: int, queue: str, timeout: float | None) -> None:
    """Push one job as RQ's enqueue would, in one round trip and one Redis command."""
    lean, keys, args = _lean_call(client, job_id, queue, timeout)
    lean.script(keys=keys, args=args, client=client)


def execute_lean(client: Any, calls: Iterable[LeanCall]) -> None:
    """Run lean pushes in one round trip, each script called by its digest alone (redis-py's
    own pipeline of scripts asks ``SCRIPT EXISTS`` first, a round trip more per batch). The
    calls a Redis refuses for a script it does not hold (never loaded, restarted, ``SCRIPT
    FLUSH``) are sent again, they alone, once their scripts are loaded: the others were
    pushed. RedisError when Redis fails the batch (some may have been pushed: a second push of
    one is harmless, the claim takes a row once)."""
    from redis.exceptions import NoScriptError

    todo = list(calls)
    for attempt in (1, 2):
        # each push is one script call of its own, so no MULTI is needed around them
        with client.pipeline(transaction=False) as pipe:
            for lean, keys, args in todo:
                pipe.evalsha(lean.script.sha, len(keys), *keys, *args)
            results = pipe.execute(raise_on_error=False)
        refused = [r for r in results if isinstance(r, Exception)]
        other = next((r for r in refused if not isinstance(r, NoScriptError)), None)
        if other is not None:
            raise other
        if not refused:
            return
        if attempt == 2:
            raise refused[0]
        todo = [call for call, r in zip(todo, results, strict=True) if isinstance(r, Exception)]
        for lean in {id(call[0]): call[0] for call in todo}.values():
            client.script_load(lean.script.script)


def _enqueue(
    pipe: Any,
    connection: Any,
    job_id: int,
    queue: str,
    timeout: float | None,
    meta: dict[str, Any] | None = None,
) -> None:
    from rq.job import Job

    rq_queue(connection, queue).enqueue_call(
        DISPATCH,
        args=(job_id,),
        job_id=rq_job_id(job_id),
        timeout=_rq_timeout(timeout),
        result_ttl=300,
        failure_ttl=86400,
        # what RQ would derive from the call, without its repr() machinery
        description=f"{DISPATCH}({job_id})",
        meta=meta,
        pipeline=pipe,
    )
    # as the lean push: nothing of an earlier delivery's hash (meta, TTL) carries over (RQ
    # writes over the hash's fields, and opens the MULTI itself, so this goes after)
    key = Job.key_for(rq_job_id(job_id))
    pipe.persist(key)
    if meta is None:
        pipe.hdel(key, "meta")


def push(
    rt: Runtime,
    job_id: int,
    queue: str,
    *,
    timeout: float | None = None,
    slot_at: float | None = None,
) -> bool:
    """Push the row id onto its RQ queue. False (logged) when Redis is unreachable or slow:
    the row stays queued and the sweeper pushes it later, so accepted work is never lost.
    `slot_at` (epoch seconds) says the job's concurrency slot was taken then, by admission:
    the worker that starts it soon after trusts it instead of taking it again."""
    from redis.exceptions import RedisError

    if skipping(rt, job_id):
        return False
    client = push_client(rt)
    started = time.monotonic()
    try:
        if slot_at is None and _scriptable(client):
            _push_lean(client, job_id, queue, timeout)
        else:
            # one MULTI/EXEC round trip: RQ alone sends two (queue registration, then the job)
            with client.pipeline() as pipe:
                meta = {"slot_at": slot_at} if slot_at is not None else None
                _enqueue(pipe, client, job_id, queue, timeout, meta)
                pipe.execute()
    except RedisError as exc:
        push_failed(rt, job_id, exc, started)
        return False
    pushlog.pushed(rt)
    return True


def skipping(rt: Runtime, job_id: int) -> bool:
    """True while this process skips Redis after a push that failed slowly."""
    if time.monotonic() < _skip_until.get(rt, 0.0):
        log.debug("push of job %s skipped: Redis failed a moment ago", job_id)
        return True
    return False


def push_failed(rt: Runtime, job_id: int, exc: Exception, started: float) -> None:
    """The push (or admission) of `job_id`, begun at monotonic `started`, failed: a slow
    failure (a timeout) makes this process skip Redis for SKIP_AFTER_FAILURE seconds, a fast one
    (a refusal) does not; and it is logged (`pushlog`: one line per few seconds, not one per
    enqueue)."""
    now = time.monotonic()
    if now - started >= min(SLOW_FAILURE, rt.settings.push_timeout / 2):
        _skip_until[rt] = now + SKIP_AFTER_FAILURE
    pushlog.push_log(rt).failed(job_id, exc)


def _scriptable(client: Any) -> bool:
    """A real Redis client (the demo's fakeredis stand-in may not run Lua)."""
    import redis as redis_lib

    return type(client) is redis_lib.Redis


def push_many(rt: Runtime, rows: Iterable[tuple[int, str, str]]) -> list[int]:
    """Push many ``(id, queue, job_type)`` rows, PUSH_BATCH per round trip. Returns the ids
    pushed; on a Redis error the rest are left to the next sweep (logged once)."""
    types = rt.registry.job_types
    timed = []
    for job_id, queue, job_type in rows:
        jt = types.get(job_type)
        timed.append((job_id, queue, jt.timeout if jt else None))
    return push_timed(rt, timed)


def push_timed(rt: Runtime, rows: Iterable[tuple[int, str, float | None]]) -> list[int]:
    """`push_many` of ``(id, queue, handler timeout)`` rows."""
    from redis.exceptions import RedisError

    rows = list(rows)
    client = push_client(rt)
    lean = _scriptable(client)
    pushed: list[int] = []
    try:
        for i in range(0, len(rows), PUSH_BATCH):
            batch = rows[i : i + PUSH_BATCH]
            push_batch(client, batch, lean)
            pushed.extend(r[0] for r in batch)
        if pushed:
            pushlog.pushed(rt)
    except RedisError as exc:
        log.warning(
            "Redis unavailable, %d job(s) stay queued for the next sweep: %s",
            len(rows) - len(pushed),
            exc,
        )
    return pushed


def push_batch(
    client: Any, rows: Iterable[tuple[int, str, float | None]], lean: bool | None = None
) -> None:
    """Push ``(id, queue, handler timeout)`` rows in one round trip (RedisError when Redis
    fails it: then none, some or all were pushed, and a second push of one is harmless)."""
    from rq.utils import now, utcformat

    if lean is None:
        lean = _scriptable(client)
    if not lean:
        with client.pipeline() as pipe:
            for job_id, queue, timeout in rows:
                _enqueue(pipe, client, job_id, queue, timeout)
            pipe.execute()
        return
    created_at = utcformat(now())
    execute_lean(client, [_lean_call(client, *row, created_at) for row in rows])
