"""The worker's lean per-job path (prosaas_core/jobs/delivery.py): RQ is the transport and sees
the worker, but a drained job leaves none of RQ's per-job bookkeeping behind, a job popped by a
worker that died before its claim is re-pushed by the sweeper and runs once, and RQ still calls
the methods the lean path overrides the way it relies on (RQ 3)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import rq
from rq import Queue, SimpleWorker, Worker
from rq.exceptions import StopRequested
from rq.job import Job
from rq.suspension import WORKERS_SUSPENDED, resume, suspend
from rq.utils import now
from rq.worker import WorkerStatus

from prosaas_core.jobs import control, dispatch
from prosaas_core.jobs.delivery import Delivery
from prosaas_core.jobs.enqueue import enqueue
from prosaas_core.testing import wait_until
from prosaas_core.worker import ProsaasSimpleWorker

#: what may be in Redis under rq: the worker's record, the queue set and RQ's maintenance lock
#: (rq:clean_*); never a key per job
WORKER_KEYS = ("rq:workers", "rq:worker:", "rq:workers:", "rq:queues", "rq:clean_")


def _rq_keys(rt) -> list[str]:
    return sorted(k.decode() for k in rt.redis.keys("rq:*"))


def _succeeded(rt, ids: list[int]) -> bool:
    return all(control.get_job(rt, i)["status"] == "succeeded" for i in ids)


@pytest.mark.parametrize("cls", ["simple", "fork"])
def test_drained_jobs_leave_no_rq_bookkeeping_and_rq_still_sees_the_worker(
    runtime, business, start_worker, cls
):
    w = start_worker("--queues", "default", extra_env={"PROSAAS_WORKER_CLASS": cls})
    w.wait_for_log("Listening on default")
    ids = [enqueue(runtime, "acme_echo", business, {"message": f"m{i}"}).id for i in range(5)]
    wait_until(lambda: _succeeded(runtime, ids), 20, "the jobs to succeed")

    def listed():
        return [x for x in Worker.all(connection=runtime.redis) if x.pid == w.pid]

    (rq_worker,) = wait_until(
        lambda: (got := listed()) and got[0].successful_job_count == 5 and got, 10, "rq counter"
    )
    assert rq_worker.get_state() == WorkerStatus.IDLE and rq_worker.queue_names() == ["default"]
    info = subprocess.run(
        [str(Path(sys.executable).with_name("rq")), "info", "--url", runtime.settings.redis_url],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert rq_worker.name in info.stdout and "jobs: 5 finished, 0 failed" in info.stdout
    # no job hash, result stream, registry or execution record per job
    assert all(k.startswith(WORKER_KEYS) for k in _rq_keys(runtime)), _rq_keys(runtime)
    w.signal(signal.SIGTERM)
    # a second here; the stop's own timing is tests/faults/test_worker_stop.py's (CI once saw
    # this fork worker take over 15 s under the full suite's load; its log was not kept)
    assert w.wait(30) == 0, w.log()[-3000:]


def test_job_popped_by_a_worker_that_died_before_its_claim_runs_once(
    runtime, business, start_worker
):
    job = enqueue(runtime, "acme_echo", business, {"message": "orphan"})
    # a worker pops the job and dies before claiming it: the job is in no list now
    dead = ProsaasSimpleWorker(["default"], connection=runtime.redis)
    got = dead.dequeue_job_and_maintain_ttl(None)
    assert got is not None and isinstance(got[0], Delivery) and got[0].job_id == job.id
    assert Queue("default", connection=runtime.redis).count == 0
    # the next worker's sweep sees a row Redis no longer holds, re-pushes it, and it runs once
    w = start_worker("--burst", "--queues", "default")
    assert w.wait(60) == 0
    out = w.log()
    assert out.count(f"JOB PICKED queue='default' job_id={job.id} ") == 1
    got_job = control.get_job(runtime, job.id)
    assert got_job["status"] == "succeeded" and got_job["attempts"] == 1


@pytest.fixture
def in_process(runtime):
    """This process as a prosaas worker's dispatcher (RQ's work loop runs here)."""
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    dispatch.configure(runtime, "lean-test", threading.Event())
    yield runtime
    dispatch.current().stop()
    dispatch._DISPATCHER = None
    signal.signal(signal.SIGINT, handlers[0])
    signal.signal(signal.SIGTERM, handlers[1])


def test_rq_behaves_as_the_lean_path_relies_on(in_process, business):
    rt = in_process
    assert rq.VERSION.split(".")[:2] == ["3", "0"], "delivery.py is written against RQ 3.0"
    # the key names the Lua scripts and the sweeper build
    assert Job.key_for("prosaas-1") == "rq:job:prosaas-1"
    assert Queue("default", connection=rt.redis).key == "rq:queue:default"
    assert WORKERS_SUSPENDED == "rq:suspended"
    # RQ's warm shutdown goes by the local state: busy waits for the job, idle stops now
    probe = SimpleWorker(["default"], connection=rt.redis)
    probe._shutdown_requested_date = now()  # what request_stop sets first
    probe._state = WorkerStatus.BUSY
    probe._shutdown()
    assert probe._stop_requested
    probe._state = WorkerStatus.IDLE
    with pytest.raises(StopRequested):
        probe._shutdown()
    # RQ's own work loop runs the lean path: dequeue, execute_job, heartbeat
    job = enqueue(rt, "acme_echo", business, {"message": "in process"})
    suspend(rt.redis)
    try:
        assert not ProsaasSimpleWorker(["default"], connection=rt.redis).work(burst=True)
        assert control.get_job(rt, job.id)["status"] == "queued"  # rq suspend is honoured
    finally:
        resume(rt.redis)
    w = ProsaasSimpleWorker(["default"], connection=rt.redis)
    assert w.work(burst=True)
    assert control.get_job(rt, job.id)["status"] == "succeeded"
    w.refresh()
    assert w.successful_job_count == 1
    assert not rt.redis.exists(Job.key_for(f"prosaas-{job.id}"))
    # another RQ function on a prosaas queue takes RQ's own path, bookkeeping and all
    foreign = Queue("default", connection=rt.redis).enqueue("os.getpid")
    assert ProsaasSimpleWorker(["default"], connection=rt.redis).work(burst=True)
    assert foreign.get_status(refresh=True) == "finished" and foreign.return_value() > 0


@pytest.mark.parametrize("queues", [["default"], ["default", "maintenance"]])
def test_a_stop_noted_during_an_empty_pop_ends_the_wait(in_process, queues):
    """SIGTERM while the pop is on the wire (the state is busy then, so RQ only notes it): the
    worker stops at once rather than block on an empty queue with the stop pending."""
    rt = in_process
    w = ProsaasSimpleWorker(queues, connection=rt.redis)
    w.register_birth()
    try:
        w._shutdown_requested_date = now()
        w._state = WorkerStatus.BUSY
        w._shutdown()  # what RQ's SIGTERM handler does while busy
        assert w._stop_requested
        started = time.monotonic()
        with pytest.raises(StopRequested):
            w.dequeue_job_and_maintain_ttl(timeout=20, max_idle_time=6)
        assert time.monotonic() - started < 5
    finally:
        w.register_death()


def test_a_re_push_carries_nothing_of_the_earlier_delivery(in_process, business):
    """A job pushed again (handed back, swept) gets a fresh hash: no meta of an earlier
    admission (a slot taken then, long released) and no TTL the worker gave the old one."""
    from prosaas_core.jobs import transport

    rt = in_process
    job = enqueue(rt, "acme_echo", business, {"message": "again"})
    key = Job.key_for(f"prosaas-{job.id}")
    for slot_at in (None, time.time()):  # the one-script push, and RQ's with meta
        rt.redis.hset(key, "meta", Job.fetch(f"prosaas-{job.id}", connection=rt.redis)
                      .serializer.dumps({"slot_at": 1.0}))  # fmt: skip
        rt.redis.expire(key, 100)
        assert transport.push(rt, job.id, "default", slot_at=slot_at)
        assert rt.redis.ttl(key) == -1
        meta = Job.fetch(f"prosaas-{job.id}", connection=rt.redis).meta
        assert meta == ({} if slot_at is None else {"slot_at": slot_at})
