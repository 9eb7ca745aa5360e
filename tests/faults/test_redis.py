"""Redis flushed, restarted empty, down and hung, with real workers and a real API: nothing is
lost, work resumes within two seconds of Redis being back, the API never waits on a hung Redis,
and an outage is two log lines, not a traceback per second."""

from __future__ import annotations

import os
import signal
import time

import pytest
import redis
import requests

from prosaas_core.jobs.enqueue import enqueue
from prosaas_core.jobs.transport import push_many, rq_job_id
from prosaas_core.testing import ServeProcess, bearer, business_with_token, run_cli, wait_until
from prosaas_core.tokens import create_admin_token
from tests.faults.targets import REDIS_BACK_TO_WORK, SLACK
from tests.test_dashboard import sign_in

BACKLOG = 10_000


def _done(fault, ids) -> bool:
    return all(fault.job(i)["status"] == "succeeded" for i in ids)


def _held_backlog(fault) -> list[int]:
    ids = fault.bulk_queued(BACKLOG, job_type="acme_count", queue="acme", payload='{"n": 1}')
    assert len(push_many(fault.rt, [(i, "acme", "acme_count") for i in ids])) == BACKLOG
    return ids


def _quiet(log: str) -> None:
    """An outage is reported once per loop, not once per retry."""
    assert "Traceback" not in log, log
    assert "sweeper round failed" not in log
    assert log.count("could not connect to Redis") <= 1, log
    assert log.count("DEPENDENCY DOWN redis (sweeper)") == 1, log
    assert log.count("DEPENDENCY BACK redis (sweeper)") == 1, log


def test_flush_with_10000_queued_rows(fault):
    _held_backlog(fault)
    w = fault.start_worker("--queues", "default")
    w.wait_for_log("Listening on default")
    w.signal(signal.SIGSTOP)  # so the flush lands while jobs are in flight to it
    small = [fault.enqueue("acme_echo", {"message": str(i)}) for i in range(5)]
    r = redis.Redis.from_url(fault.redis.url())
    r.flushall()
    flushed = time.monotonic()
    w.signal(signal.SIGCONT)
    wait_until(lambda: _done(fault, small), REDIS_BACK_TO_WORK + SLACK + 2, "small queue done")
    took = time.monotonic() - flushed
    assert took < REDIS_BACK_TO_WORK + SLACK, took
    # the whole backlog is back in Redis too, in the same sweep
    wait_until(lambda: r.llen("rq:queue:acme") == BACKLOG, 30, "the backlog re-pushed")
    assert f"SWEEPER re-pushed {BACKLOG + 5} queued job(s)" in w.log()
    print(f"flush_to_work {took:.2f}s")


def test_redis_restart_and_outage(fault, caplog):
    # 10,000 queued rows on another queue, which the restarted (empty) Redis no longer holds
    backlog = fault.bulk_queued(BACKLOG, job_type="acme_count", queue="acme", payload='{"n": 1}')
    w = fault.start_worker("--queues", "default")
    # past RQ's own start-up (its registry clean-up right after "Listening on" logs a traceback
    # of its own when Redis dies under it; the worker then restarts it): the outage is meant to
    # meet the running worker
    w.wait_for_log("cleaning group registries")
    r = redis.Redis.from_url(fault.redis.url())
    wait_until(lambda: r.llen("rq:queue:acme") == BACKLOG, 30, "the backlog pushed")
    fault.redis.kill()
    time.sleep(4)  # down: the worker keeps retrying, quietly
    began = time.monotonic()
    during = [fault.enqueue("acme_echo", {"message": str(i)}) for i in range(5)]
    assert time.monotonic() - began < 1.0  # Redis down: the pushes fail fast, rows committed
    fault.redis.start()  # back, empty
    back = time.monotonic()
    wait_until(lambda: _done(fault, during), REDIS_BACK_TO_WORK + SLACK + 2, "jobs done")
    took = time.monotonic() - back
    assert took < REDIS_BACK_TO_WORK + SLACK, took
    # pushed at once, not left to the next full sweep (10 s): the failed pushes above were
    # refusals, which cost nothing to try again, so this process does not skip Redis now
    accepted = enqueue(fault.rt, "acme_echo", fault.business, {"message": "after"})
    assert accepted.pushed, "the first enqueue after Redis is back was not pushed"
    # this process's five failed pushes: one warning, and the count when pushes work again
    said = [r.getMessage() for r in caplog.records if r.name == "prosaas.jobs"]
    assert sum("Redis unavailable" in m for m in said) == 1, said
    # (4 more, unless one refusal took long enough on a loaded machine to skip the others)
    assert any(m.startswith("Redis pushes work again") for m in said), said
    wait_until(lambda: _done(fault, [accepted.id]), REDIS_BACK_TO_WORK + SLACK, "a new job runs")
    r = redis.Redis.from_url(fault.redis.url())
    wait_until(lambda: r.llen("rq:queue:acme") == len(backlog), 30, "the backlog re-pushed")
    _quiet(w.log())
    print(f"redis_back_to_work {took:.2f}s")


# acme_slot: flow-limited; a delay: the job goes to the delayed set, not a queue
@pytest.mark.parametrize(
    "job_type, when", [("acme_echo", {}), ("acme_slot", {}), ("acme_echo", {"delay": 0.5})]
)
def test_hung_redis_does_not_stall_the_api(fault, job_type, when):
    _, token = business_with_token(fault.rt, "hung")
    h = bearer(token)
    w = fault.start_worker()
    w.wait_for_log("Listening on")
    with ServeProcess(fault.env, workers=1, log_path=fault.tmp / "serve.log") as srv:
        fault.redis.freeze()
        try:
            ids = []
            for i in range(4):
                t = time.monotonic()
                resp = requests.post(
                    srv.url + "/api/jobs",
                    json={"job_type": job_type, "payload": {"message": str(i)}, **when},
                    headers=h,
                    timeout=15,
                )
                took = time.monotonic() - t
                assert resp.status_code == 202, resp.text
                # PROSAAS_PUSH_TIMEOUT (1 s) at most, and only for the first push
                assert took < 1.0 + SLACK, took
                ids.append(resp.json()["id"])
                t = time.monotonic()
                assert requests.get(srv.url + "/healthz", timeout=5).status_code == 200
                assert time.monotonic() - t < 0.5
            t = time.monotonic()  # readiness does ask Redis, but no longer than a push waits
            assert requests.get(srv.url + "/readyz", timeout=15).status_code == 503
            assert time.monotonic() - t < 1.0 + SLACK
        finally:
            fault.redis.thaw()
        wait_until(lambda: _done(fault, ids), 30, "jobs accepted during the hang done")
    log = (fault.tmp / "serve.log").read_text()
    # "Enqueued" means committed and pushed (or scheduled): the first push timed out, and it
    # says so
    assert f"Accepted job_id={ids[0]} " in log
    assert f"Enqueued job_id={ids[0]} " not in log


def test_a_graceful_stop_pushes_what_the_api_accepted(fault):
    """The API pushes behind its answers: a server stopped (SIGTERM) while its pushes wait for a
    hung Redis still pushes, before it exits, the jobs it accepted and had not sent yet."""
    _, token = business_with_token(fault.rt, "stop")
    r = redis.Redis.from_url(fault.redis.url())
    env = {**fault.env, "PROSAAS_PUSH_TIMEOUT": "8"}  # the hang below stays well inside it

    def post(i: int) -> int:
        t = time.monotonic()
        resp = requests.post(
            srv.url + "/api/jobs",
            json={"job_type": "acme_echo", "payload": {"message": str(i)}},
            headers=bearer(token),
            timeout=15,
        )
        assert resp.status_code == 202, resp.text
        assert time.monotonic() - t < 2.0  # the answer does not wait for Redis (8 s)
        return resp.json()["id"]

    srv = ServeProcess(env, workers=1, log_path=fault.tmp / "serve.log").start()
    try:
        ids = [post(0)]  # the pusher's connection is open before the hang
        wait_until(lambda: r.llen("rq:queue:default") == 1, 10, "the first job pushed")
        fault.redis.freeze()
        try:
            ids.append(post(1))
            time.sleep(0.3)  # its push is sent and waits for an answer...
            ids += [post(i) for i in range(2, 6)]  # ...while these wait for the pusher
            os.killpg(srv.proc.pid, signal.SIGTERM)
            # the worker stops (and its exit waits up to 3 s for the pusher); what it never
            # sent would be lost with it
            time.sleep(1.5)
        finally:
            fault.redis.thaw()
        assert srv.proc.wait(timeout=20) == 0
    finally:
        srv.stop()
    assert sorted(r.lrange("rq:queue:default", 0, -1)) == sorted(rq_job_id(i).encode() for i in ids)
    log = (fault.tmp / "serve.log").read_text()
    assert all(f"Enqueued job_id={i} " in log for i in ids), log[-2000:]


def test_hung_redis_fails_reads_fast(fault):
    """What reads Redis on somebody's behalf (a metrics scrape, a dashboard page, `prosaas
    doctor`) gives up within PROSAAS_PUSH_TIMEOUT per read, not the 10 s a worker's loops wait."""
    fault.enqueue("acme_slot", {"message": "x"})  # so the flow summary reads its slots too
    with ServeProcess(fault.env, workers=1, log_path=fault.tmp / "serve.log") as srv:
        fault.redis.freeze()
        try:
            t = time.monotonic()
            resp = requests.get(srv.url + "/metrics", timeout=60)
            took = time.monotonic() - t
            assert resp.status_code == 200, resp.text
            # Redis is read by three sources (queues, workers, flow): each fails on its own
            for source in ("redis", "workers", "flow"):
                assert f'prosaas_metrics_source_up{{source="{source}"}} 0.0' in resp.text
            assert 'prosaas_metrics_source_up{source="database"} 1.0' in resp.text
            assert took < 3 * (1.0 + SLACK), took
            t = time.monotonic()  # a process that has no signing key yet must read it
            resp = requests.get(srv.url + "/dashboard/login", timeout=60)
            took = time.monotonic() - t
            assert resp.status_code == 503, resp.text
            assert "Service unavailable" in resp.text
            assert took < 1.0 + SLACK, took
            t = time.monotonic()
            proc = run_cli("doctor", env=fault.env, timeout=60)
            took = time.monotonic() - t
            assert proc.returncode != 0
            assert "Redis unreachable" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
            assert "Traceback" not in proc.stdout + proc.stderr
            assert took < 5 + 1.0 + SLACK, took  # the interpreter's start-up and the checks
        finally:
            fault.redis.thaw()
        assert requests.get(srv.url + "/dashboard/login", timeout=15).status_code == 200
        fault.redis.freeze()  # one that has the key keeps serving pages with it
        try:
            t = time.monotonic()
            resp = requests.get(srv.url + "/dashboard/login", timeout=60)
            assert resp.status_code == 200, resp.text
            assert time.monotonic() - t < 0.5
        finally:
            fault.redis.thaw()
    log = (fault.tmp / "serve.log").read_text()
    assert "Traceback" not in log, log
    assert "Redis unavailable on GET /dashboard/login" in log


def test_dashboard_keeps_its_key_while_redis_hangs(fault, monkeypatch):
    """With Redis hung, a process that has the signing key tries Redis for it once per
    SECRET_REFRESH (one request waits PROSAAS_PUSH_TIMEOUT), and signs with the key it has."""
    from prosaas_core import create_app
    from prosaas_core.dashboard import session

    monkeypatch.setattr(session, "SECRET_REFRESH", 1.5)
    with fault.rt.session() as s:
        admin = create_admin_token(s, "ops")[0]
    client = create_app(fault.env).test_client()
    sign_in(client, admin)  # reads the key, keeps it
    fault.enqueue("acme_slot", {"message": "x"})  # the overview has flow limits to show
    fault.redis.freeze()
    try:
        time.sleep(1.6)  # the key is due to be read again
        took = []
        for _ in range(3):
            t = time.monotonic()
            assert client.get("/dashboard/login").status_code in (200, 302)
            took.append(time.monotonic() - t)
        t = time.monotonic()  # one read of Redis for the queue lengths, then no more
        overview = client.get("/dashboard/api/overview")
        overview_took = time.monotonic() - t
    finally:
        fault.redis.thaw()
    assert took[0] >= 0.9, took  # it did ask Redis (PROSAAS_PUSH_TIMEOUT, 1 s)
    assert max(took[1:]) < 0.6, took  # and not again within SECRET_REFRESH
    assert overview.status_code == 200, overview.text  # still signed in
    assert all(q["in_redis"] is None for q in overview.json["queues"].values())
    assert overview.json["flow"] == []
    assert overview_took < 1.7, overview_took
