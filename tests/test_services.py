"""Plugin services in real workers: always started, supervised, disabled only on request; and a
clean, bounded stop on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prosaas_core.jobs import control
from prosaas_core.jobs.enqueue import enqueue
from prosaas_core.jobs.heartbeat import live_workers
from prosaas_core.testing import wait_until


def ticker_state(rt) -> dict | None:
    workers = live_workers(rt)
    return workers[0]["services"].get("acme-ticker") if workers else None


@pytest.mark.parametrize("schedulers", [None, "0"])
def test_services_start_whatever_enable_schedulers_says(runtime, start_worker, schedulers):
    extra = {} if schedulers is None else {"ENABLE_SCHEDULERS": schedulers}
    w = start_worker(extra_env=extra)
    w.wait_for_log("ACME-TICKER STARTED")
    wait_until(lambda: int(runtime.redis.get("acme:ticks") or 0) >= 3, 10, "acme-ticker ticks")
    wait_until(lambda: (ticker_state(runtime) or {}).get("state") == "running", 10)
    (worker,) = live_workers(runtime)
    assert worker["pid"] == w.pid and "default" in worker["queues"] and "acme" in worker["queues"]
    assert worker["services"]["acme-ticker"] == {
        "state": "running",
        "restarts": 0,
        "last_error": None,
    }
    if schedulers is not None:
        return
    # a normal RQ worker, as `rq info` shows it
    info = subprocess.run(
        [str(Path(sys.executable).with_name("rq")), "info", "--url", runtime.settings.redis_url],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert worker["name"] in info.stdout
    w.signal(signal.SIGTERM)
    assert w.wait(15) == 0
    assert "SERVICE STOPPED acme-ticker" in w.log()
    assert live_workers(runtime) == []


def test_crashing_service_is_restarted_with_traceback(runtime, start_worker):
    w = start_worker(extra_env={"ACME_TICKER_CRASH": "1", "PROSAAS_SERVICE_BACKOFF": "0.2"})
    out = w.wait_for_log("ACME-TICKER STARTED", count=2)
    assert "SERVICE CRASHED acme-ticker: restarting in 0.2s" in out
    assert "Traceback (most recent call last)" in out
    assert "RuntimeError: acme-ticker crashing on purpose" in out
    state = wait_until(
        lambda: (
            (s := ticker_state(runtime)) and s["restarts"] == 1 and s["state"] == "running" and s
        )
    )
    assert "crashing on purpose" in state["last_error"]
    wait_until(lambda: int(runtime.redis.get("acme:ticks") or 0) >= 3, 10, "ticks after restart")


def test_disable_services_turns_one_off_and_says_so(runtime, start_worker):
    w = start_worker(extra_env={"PROSAAS_DISABLE_SERVICES": "acme-ticker"})
    out = w.wait_for_log("SERVICE DISABLED acme-ticker")
    wait_until(lambda: ticker_state(runtime), 10)
    assert ticker_state(runtime)["state"] == "disabled"
    assert "ACME-TICKER STARTED" not in out
    time.sleep(0.5)
    assert runtime.redis.get("acme:ticks") is None


def test_sigterm_stops_within_bound_and_job_resumes(runtime, business, start_worker):
    job = enqueue(runtime, "acme_count", business, {"n": 300, "batch": 10, "sleep": 0.05})
    w = start_worker()
    wait_until(lambda: control.get_job(runtime, job.id)["processed"] >= 30, 15)
    sent = time.monotonic()
    w.signal(signal.SIGTERM)
    assert w.wait(10) == 0
    assert time.monotonic() - sent < 5
    out = w.log()
    assert f"JOB REQUEUED job_id={job.id}" in out and "SERVICE STOPPED acme-ticker" in out
    got = control.get_job(runtime, job.id)
    checkpoint = got["state"]["next"]
    assert got["status"] == "queued" and got["attempts"] == 0 and checkpoint >= 30
    # another worker picks it up right away (no stale heartbeat to wait for), from the checkpoint
    b = start_worker("--burst")
    assert b.wait(60) == 0
    got = control.get_job(runtime, job.id)
    assert got["status"] == "succeeded" and got["result"]["resumed_from"] == checkpoint


def test_sigterm_bound_when_the_handler_ignores_should_stop(runtime, business, start_worker):
    job = enqueue(runtime, "acme_count", business, {"n": 1, "batch": 1, "sleep": 60})
    w = start_worker(extra_env={"PROSAAS_SHUTDOWN_TIMEOUT": "1"})
    wait_until(lambda: control.get_job(runtime, job.id)["processed"] >= 1, 15)
    sent = time.monotonic()
    w.signal(signal.SIGTERM)
    w.wait(10)
    assert time.monotonic() - sent < 4
    assert "WORKER STOP TIMEOUT" in w.log()
    got = control.get_job(runtime, job.id)
    assert got["status"] == "queued" and json.dumps(got["state"]) == '{"next": 1}'
