"""PostgreSQL restarted, stopped and its backends terminated under a running job: the job
neither loses an attempt nor an item, and resumes within seconds of the database being back."""

from __future__ import annotations

import time

import pytest

from prosaas_core.testing import run_cli, wait_until
from tests.faults.targets import SLACK

N, BATCH = 500, 10
COUNT = {"n": N, "batch": BATCH, "sleep": 0.05}
#: the database back -> the job making progress again (the lease renews every second)
PG_BACK_TO_WORK = 5.0


def _checkpoint(fault, job_id: int) -> int:
    return (fault.job(job_id)["state"] or {}).get("next", 0)


def _assert_complete(fault, job_id: int) -> None:
    got = fault.job(job_id)
    assert got["status"] == "succeeded", got
    assert got["attempts"] == 1, got  # the blip did not cost an attempt
    assert [item for item, _ in fault.ticks(job_id)] == list(range(N))


@pytest.mark.parametrize("cls", ["simple", "fork"])
def test_restart_under_load_costs_no_attempt(fault, cls):
    w = fault.start_worker("--queues", "acme", extra_env={"PROSAAS_WORKER_CLASS": cls})
    job = fault.enqueue("acme_count", COUNT)
    wait_until(lambda: _checkpoint(fault, job) >= 60, 30, "first checkpoints")
    fault.pg.restart("fast")
    wait_until(lambda: fault.job(job)["status"] == "succeeded", 60, "done")
    _assert_complete(fault, job)
    assert "Traceback" not in w.log()


def test_terminated_backends_cost_no_attempt(fault):
    w = fault.start_worker("--queues", "acme")
    job = fault.enqueue("acme_count", COUNT)
    wait_until(lambda: _checkpoint(fault, job) >= 60, 30, "first checkpoints")
    assert fault.pg.terminate_backends(fault.db) >= 1
    wait_until(lambda: fault.job(job)["status"] == "succeeded", 60, "done")
    _assert_complete(fault, job)
    assert "Traceback" not in w.log()


def test_outage_longer_than_the_lease_resumes_at_once(fault):
    w = fault.start_worker("--queues", "acme")
    job = fault.enqueue("acme_count", COUNT)
    wait_until(lambda: _checkpoint(fault, job) >= 60, 30, "first checkpoints")
    # read just before the outage: at most one more batch can land before it begins
    before = _checkpoint(fault, job) + BATCH
    fault.pg.stop("fast")
    time.sleep(7)  # past the lease: the worker must stop writing, then hand the job back
    fault.pg.start()
    back = time.monotonic()

    def moving() -> bool:
        got = fault.job(job)
        return got["status"] == "succeeded" or (got["state"] or {}).get("next", 0) > before

    wait_until(moving, PG_BACK_TO_WORK + SLACK, "progress")
    took = time.monotonic() - back
    assert took < PG_BACK_TO_WORK + SLACK, took
    wait_until(lambda: fault.job(job)["status"] == "succeeded", 60, "done")
    _assert_complete(fault, job)
    log = w.log()
    assert log.count("DEPENDENCY DOWN database (sweeper)") == 1, log
    assert "sweeper round failed" not in log
    print(f"pg_back_to_work {took:.2f}s")


def test_hung_postgres_fails_a_connect_in_seconds(fault):
    """A server that accepts connections and never answers (its postmaster stopped) fails a new
    connection after the default connect timeout (10 s), or the one DATABASE_URL sets, and the
    CLI says so in one line: `prosaas db upgrade` or `prosaas worker` in a container starting
    against it exits instead of hanging (libpq alone waits for ever)."""
    from sqlalchemy.exc import OperationalError

    from prosaas_core.db import make_engine

    env = {k: v for k, v in fault.env.items() if k != "PGCONNECT_TIMEOUT"}
    url = env["DATABASE_URL"]
    fault.pg.freeze()
    try:
        for query, expected in (("?connect_timeout=2", 2.0), ("", 10.0)):
            engine = make_engine(url + query)
            t = time.monotonic()
            with pytest.raises(OperationalError, match="timeout expired"):
                engine.connect()
            took = time.monotonic() - t
            engine.dispose()
            assert expected - 0.5 < took < expected + 1.5, (query, took)
        t = time.monotonic()
        proc = run_cli("db", "check", env={**env, "DATABASE_URL": url + "?connect_timeout=2"})
        out = proc.stdout + proc.stderr
        assert proc.returncode == 1, out
        assert "timeout expired" in out and "Traceback" not in out, out
        assert time.monotonic() - t < 2 + SLACK + 5, out  # the CLI's start-up, then 2 s
    finally:
        fault.pg.thaw()
