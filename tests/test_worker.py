"""The generic worker end to end: real `prosaas worker` processes, PostgreSQL and Redis."""

from __future__ import annotations

import json
import re
from datetime import datetime

import pytest

from prosaas_core.jobs import control
from prosaas_core.jobs.enqueue import enqueue
from prosaas_core.jobs.transport import push
from prosaas_core.testing import wait_until


def burst(start_worker, **extra_env) -> str:
    w = start_worker("--burst", extra_env=extra_env)
    code = w.wait(60)
    out = w.log()
    assert code == 0, out
    return out


def status_of(rt, job_id: int) -> str:
    return control.get_job(rt, job_id)["status"]


def test_plugin_job_runs_end_to_end(cli, runtime, business, start_worker):
    enq = cli(
        "jobs", "enqueue", "acme_echo", "--business", str(business),
        "--payload", '{"message": "hello"}', "--json", check=True,
    )  # fmt: skip
    job_id = json.loads(enq.stdout)["id"]
    out = burst(start_worker)
    assert "WORKER QUEUES CONFIGURATION" in out
    assert "Heartbeat monitoring started (every 1s)" in out
    assert "ACME-TICKER STARTED" in out
    assert f"JOB PICKED queue='default' job_id={job_id} " in out
    assert re.search(
        rf"JOB DONE job_id={job_id} job_type=acme_echo business_id={business} .*duration=", out
    )
    shown = json.loads(cli("jobs", "show", str(job_id), "--json", check=True).stdout)
    assert shown["status"] == "succeeded"
    assert shown["result"] == {"echo": "hello", "attempt": 1}
    assert shown["attempts"] == 1 and shown["business_id"] == business
    for key in ("processed", "total", "error", "job_type", "max_attempts", "finished_at"):
        assert key in shown


def test_same_job_delivered_twice_runs_once(runtime, business, start_worker):
    job = enqueue(runtime, "acme_count", business, {"n": 5, "batch": 5})
    assert push(runtime, job.id, "acme")  # a second delivery of the same row
    out = burst(start_worker)
    # the second copy is dropped at the pop (its job hash went with the first delivery) or
    # skipped at the claim: either way the job runs once
    assert out.count(f"JOB PICKED queue='acme' job_id={job.id} ") == 1
    assert push(runtime, job.id, "acme")  # a stale delivery after the job finished
    assert f"JOB SKIPPED job_id={job.id}" in burst(start_worker)
    got = control.get_job(runtime, job.id)
    assert got["status"] == "succeeded" and got["attempts"] == 1
    with runtime.engine.connect() as conn:
        from sqlalchemy import text

        attempts = conn.execute(
            text("SELECT attempt FROM acme_ticks WHERE job_id = :j"), {"j": job.id}
        ).scalars()
        assert sorted(attempts) == [1] * 5


def _picked_times(out: str, job_id: int) -> list[datetime]:
    stamps = re.findall(rf"^(\S+ \S+) INFO .*JOB PICKED .*job_id={job_id} ", out, re.M)
    return [datetime.strptime(s, "%Y-%m-%d %H:%M:%S,%f") for s in stamps]


def test_retries_with_exponential_backoff(runtime, business, start_worker):
    job = enqueue(runtime, "acme_fail", business, {"fail_times": 2})
    out = burst(start_worker, PROSAAS_RETRY_BACKOFF="0.4")
    got = control.get_job(runtime, job.id)
    assert got["status"] == "succeeded", out
    assert got["attempts"] == 3 and got["result"] == {"succeeded_on_attempt": 3}
    assert "retry_in=0.4s" in out and "retry_in=0.8s" in out
    t1, t2, t3 = _picked_times(out, job.id)
    assert (t2 - t1).total_seconds() >= 0.4
    assert (t3 - t2).total_seconds() >= 0.8


def test_failure_after_max_attempts_keeps_error_and_traceback(runtime, business, start_worker):
    job = enqueue(runtime, "acme_fail", business, {"fail_times": 10})
    out = burst(start_worker, PROSAAS_RETRY_BACKOFF="0.05")
    got = control.get_job(runtime, job.id)
    assert got["status"] == "failed" and got["attempts"] == 3
    assert "Traceback" in got["error"]
    assert got["error"].strip().endswith("RuntimeError: acme_fail failing on purpose, attempt 3")
    assert re.search(rf"JOB FAILED job_id={job.id} job_type=acme_fail business_id={business} ", out)


def test_timeout_fails_the_attempt(runtime, business, start_worker):
    job = enqueue(runtime, "acme_sleep", business, {"seconds": 30})  # timeout=2
    w = start_worker(extra_env={"PROSAAS_RETRY_BACKOFF": "60"})
    wait_until(lambda: control.get_job(runtime, job.id)["error"], 15, "the first attempt to end")
    got = control.get_job(runtime, job.id)
    assert got["status"] == "queued" and got["attempts"] == 1  # a retry is scheduled
    assert "timed out after 2s" in got["error"]
    took = datetime.fromisoformat(got["updated_at"]) - datetime.fromisoformat(got["started_at"])
    # acme_sleep's timeout is 2 s: not before it, and well before the 30 s the job would sleep
    # (the upper margin absorbs a busy 2-core machine)
    assert 1.9 <= took.total_seconds() < 2 + 10
    w.wait_for_log(f"JOB RETRY job_id={job.id} job_type=acme_sleep")


def test_cancel_queued_job_never_runs(cli, runtime, business, start_worker):
    job = enqueue(runtime, "acme_echo", business, {"message": "never"})
    res = cli("jobs", "cancel", str(job.id), check=True)
    assert "cancelled" in res.stdout
    out = burst(start_worker)
    assert f"JOB SKIPPED job_id={job.id}" in out
    assert status_of(runtime, job.id) == "cancelled"
    from prosaas_core.errors import ConflictError

    with pytest.raises(ConflictError):
        control.cancel_job(runtime, job.id)


def test_cancel_running_job_stops_at_should_stop(cli, runtime, business, start_worker):
    job = enqueue(runtime, "acme_unique", business, {"seconds": 60})
    w = start_worker()
    wait_until(lambda: status_of(runtime, job.id) == "running", 15, "the job to start")
    res = cli("jobs", "cancel", str(job.id), check=True)
    assert "cancel requested" in res.stdout
    wait_until(lambda: status_of(runtime, job.id) == "cancelled", 5, "the job to stop")
    assert control.get_job(runtime, job.id)["result"] == {"stopped": True}
    w.wait_for_log(f"JOB CANCELLED job_id={job.id} job_type=acme_unique")


def test_unique_per_business_jobs_are_deduplicated(cli, runtime, business):
    first = enqueue(runtime, "acme_unique", business, {"seconds": 1})
    again = cli("jobs", "enqueue", "acme_unique", "--business", str(business), "--json")
    second = json.loads(again.stdout)
    assert first.created is True and second["created"] is False
    assert second["id"] == first.id
    control.cancel_job(runtime, first.id)
    third = enqueue(runtime, "acme_unique", business, {"seconds": 1})
    assert third.created is True and third.id != first.id


def test_retry_command_requeues_failed_job_only(cli, runtime, business, start_worker):
    job = enqueue(runtime, "acme_fail", business, {"fail_times": 3})
    burst(start_worker, PROSAAS_RETRY_BACKOFF="0.01")
    assert status_of(runtime, job.id) == "failed"
    assert control.retry_job(runtime, job.id)["status"] == "queued"
    burst(start_worker)
    got = control.get_job(runtime, job.id)
    assert got["status"] == "succeeded" and got["result"] == {"succeeded_on_attempt": 4}
    assert got["attempts"] == 4 and got["max_attempts"] == 6
    again = cli("jobs", "retry", str(job.id))
    assert again.returncode == 1 and "only failed or cancelled" in again.stderr


def test_watch_draws_progress_and_exit_status(cli, runtime, business, start_worker):
    ok = enqueue(runtime, "acme_count", business, {"n": 40, "batch": 10, "sleep": 0.1})
    bad = enqueue(runtime, "acme_fail", business, {"fail_times": 10})
    start_worker(extra_env={"PROSAAS_RETRY_BACKOFF": "0.05"})
    res = cli("jobs", "watch", str(ok.id), "--interval", "0.1", "--timeout", "30")
    assert res.returncode == 0, res.stderr
    assert "40/40" in res.stdout and "succeeded" in res.stdout
    res = cli("jobs", "watch", str(bad.id), "--interval", "0.1", "--timeout", "30")
    assert res.returncode == 1
    assert "failed" in res.stderr


def test_jobs_of_another_business_look_missing(runtime, business):
    from prosaas_core.errors import NotFoundError
    from prosaas_core.models import Business

    with runtime.session() as s:
        other = Business(name="Other")
        s.add(other)
        s.flush()
        other_id = other.id
    job = enqueue(runtime, "acme_echo", business, {"message": "mine"})
    for fn in (control.get_job, control.cancel_job, control.retry_job):
        with pytest.raises(NotFoundError) as a:
            fn(runtime, job.id, business_id=other_id)
        with pytest.raises(NotFoundError) as b:
            fn(runtime, 999999, business_id=other_id)
        assert str(a.value).replace(str(job.id), "N") == str(b.value).replace("999999", "N")
    assert control.list_jobs(runtime, business_id=other_id) == []
    assert [j["id"] for j in control.list_jobs(runtime, business_id=business)] == [job.id]


def test_bad_input_is_one_line_error(cli, runtime, business):
    res = cli("jobs", "enqueue", "acme_echo", "--business", str(business), "--payload", "{")
    assert res.returncode != 0 and res.stderr.strip().startswith("error: --payload")
    res = cli("jobs", "enqueue", "acme_echo", "--business", str(business), "--payload", "{}")
    assert res.returncode != 0 and "message" in res.stderr.strip().splitlines()[-1]
    res = cli("jobs", "show", "424242")
    assert res.returncode == 1 and res.stderr.strip() == "error: job 424242 not found"
