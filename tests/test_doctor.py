"""`prosaas doctor`: pending work nobody consumes is the finding that matters."""

from __future__ import annotations

from prosaas_core.jobs.enqueue import enqueue
from prosaas_core.jobs.heartbeat import live_workers
from prosaas_core.testing import wait_until


def test_doctor_reports_queue_with_pending_jobs_and_no_worker(cli, runtime, business):
    enqueue(runtime, "acme_count", business, {"n": 1})
    res = cli("doctor")
    assert res.returncode == 1
    lines = res.stdout.splitlines()
    assert "ok      database reachable (postgresql)" in lines
    assert "ok      Redis reachable" in lines
    assert any(
        line.startswith("PROBLEM queue 'acme': 1 pending job(s) and no live worker consuming it")
        for line in lines
    ), res.stdout


def test_doctor_healthy_with_a_worker_on_every_queue(cli, runtime, business, start_worker):
    enqueue(runtime, "acme_unique", business, {"seconds": 30})  # keeps one job running
    w = start_worker()
    wait_until(lambda: live_workers(runtime), 15, "a live worker")
    res = cli("doctor")
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"pid {w.pid}: queues " in res.stdout
    assert "acme-ticker=running" in res.stdout
    assert "no problems found" in res.stdout


def test_doctor_reports_service_backlog_nobody_runs(cli, runtime, start_worker):
    runtime.redis.set("acme:backlog", 3)
    start_worker(extra_env={"PROSAAS_DISABLE_SERVICES": "acme-ticker"})
    wait_until(lambda: live_workers(runtime), 15, "a live worker")
    res = cli("doctor")
    assert res.returncode == 1
    assert (
        "PROBLEM service 'acme-ticker': 3 pending item(s) and no live worker running it"
        in res.stdout
    )
    assert "acme-ticker=disabled" in res.stdout


def test_doctor_reports_unreachable_redis(cli, runtime):
    res = cli("doctor", extra_env={"REDIS_URL": "redis://127.0.0.1:1/0"})
    assert res.returncode == 1
    assert "PROBLEM Redis unreachable (redis://127.0.0.1:1/0)" in res.stdout
