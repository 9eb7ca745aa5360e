"""SIGTERM in both worker classes, with a job that stops in time and with one that does not
(the shutdown timeout): the job is always handed back without using an attempt, and a forking
worker never leaves its work horse behind."""

from __future__ import annotations

import signal

import pytest

from prosaas_core.testing import wait_until
from tests.faults.servers import alive, children


def _checkpoint(fault, job_id: int) -> int:
    return (fault.job(job_id)["state"] or {}).get("next", 0)


@pytest.mark.parametrize("cls", ["simple", "fork"])
def test_sigterm_job_requeued_from_checkpoint(fault, cls):
    job = fault.enqueue("acme_count", {"n": 2000, "batch": 10, "sleep": 0.05})
    w = fault.start_worker("--queues", "acme", extra_env={"PROSAAS_WORKER_CLASS": cls})
    wait_until(lambda: _checkpoint(fault, job) >= 30, 30, "first checkpoints")
    w.signal(signal.SIGTERM)
    assert w.wait(20) == 0
    log = w.log()
    assert f"JOB REQUEUED job_id={job}" in log and "WORKER STOPPED" in log
    got = fault.job(job)
    assert got["status"] == "queued" and got["attempts"] == 0, got


@pytest.mark.parametrize("cls", ["simple", "fork"])
def test_sigterm_past_shutdown_timeout_releases_job_and_ends_horse(fault, cls):
    # one batch, then a 60 s sleep before the next should_stop(): the stop times out
    job = fault.enqueue("acme_count", {"n": 100, "batch": 10, "sleep": 60})
    w = fault.start_worker(
        "--queues",
        "acme",
        extra_env={"PROSAAS_WORKER_CLASS": cls, "PROSAAS_SHUTDOWN_TIMEOUT": "2"},
    )
    wait_until(lambda: _checkpoint(fault, job) == 10, 30, "the first checkpoint")
    horses = children(w.pid) if cls == "fork" else []
    assert len(horses) == (1 if cls == "fork" else 0)
    w.signal(signal.SIGTERM)
    assert w.wait(15) == 1
    log = w.log()
    assert "WORKER STOP TIMEOUT after 2s" in log
    assert f"JOB RELEASED job_id={job}: handed back to the queue" in log, log
    got = fault.job(job)
    assert got["status"] == "queued" and got["attempts"] == 0, got
    wait_until(lambda: not any(alive(h) for h in horses), 3, "the work horse gone")
    # and it resumes from its checkpoint on the next worker
    fault.sql("UPDATE background_jobs SET payload = CAST(:p AS jsonb) WHERE id = :i",
              p='{"n": 100, "batch": 10}', i=job)  # fmt: skip
    w2 = fault.start_worker("--queues", "acme", extra_env={"PROSAAS_WORKER_CLASS": cls})
    wait_until(lambda: fault.job(job)["status"] == "succeeded", 30, "done elsewhere")
    assert fault.job(job)["result"] == {"counted": 100, "resumed_from": 10}
    assert f"JOB PICKED queue='acme' job_id={job}" in w2.log()
