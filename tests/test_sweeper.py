"""The sweeper with real worker processes: lost Redis data, killed workers, stale workers."""

from __future__ import annotations

import signal
import time

import redis
from sqlalchemy import text

from prosaas_core.jobs import control
from prosaas_core.jobs.enqueue import enqueue
from prosaas_core.jobs.sweeper import LOCK_KEY, sweep
from prosaas_core.testing import wait_until


def ticks(rt, job_id: int) -> list[tuple[int, int]]:
    with rt.engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                text("SELECT item, attempt FROM acme_ticks WHERE job_id = :j ORDER BY item"),
                {"j": job_id},
            )
        ]


def test_redis_flush_loses_nothing(runtime, business, redis_url, start_worker):
    jobs = [enqueue(runtime, "acme_count", business, {"n": 2, "batch": 2}) for _ in range(100)]
    # FLUSHDB on the test database: for prosaas's keys, the same as a FLUSHALL
    redis.Redis.from_url(redis_url).flushdb()
    w = start_worker("--burst")
    assert w.wait(60) == 0
    assert "SWEEPER re-pushed 100 queued job(s)" in w.log()
    with runtime.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT status, attempts, count(*) FROM background_jobs GROUP BY 1, 2")
        ).all()
        per_job = conn.execute(
            text("SELECT count(*), min(attempt), max(attempt) FROM acme_ticks GROUP BY job_id")
        ).all()
    assert rows == [("succeeded", 1, 100)]
    assert len(per_job) == len(jobs) and set(per_job) == {(2, 1, 1)}


def test_killed_worker_job_resumes_from_checkpoint(runtime, business, start_worker):
    n = 300
    job = enqueue(runtime, "acme_count", business, {"n": n, "batch": 10, "sleep": 0.05})
    a = start_worker("--queues", "acme")
    wait_until(lambda: (control.get_job(runtime, job.id)["state"] or {}).get("next", 0) >= 50)
    a.signal(signal.SIGKILL)
    a.wait(10)
    checkpoint = control.get_job(runtime, job.id)["state"]["next"]
    assert 50 <= checkpoint < n
    b = start_worker("--queues", "acme")
    wait_until(lambda: control.get_job(runtime, job.id)["status"] == "succeeded", 30)
    got = control.get_job(runtime, job.id)
    assert got["attempts"] == 2 and got["processed"] == n
    # the second attempt started exactly at the checkpoint: nothing before it was done again
    assert got["result"] == {"counted": n, "resumed_from": checkpoint}
    rows = ticks(runtime, job.id)
    assert [item for item, _ in rows] == list(range(n))  # nothing lost, nothing twice
    assert all(attempt == 1 for item, attempt in rows if item < checkpoint)
    assert all(attempt == 2 for item, attempt in rows if item >= checkpoint + 10)
    assert f"SWEEPER rescued job_id={job.id}" in b.log()


def test_stale_worker_cannot_overwrite_rescued_job(runtime, business, start_worker):
    n = 200
    job = enqueue(runtime, "acme_count", business, {"n": n, "batch": 10, "sleep": 0.1})
    a = start_worker("--queues", "acme")
    wait_until(lambda: control.get_job(runtime, job.id)["processed"] >= 20)
    a.signal(signal.SIGSTOP)  # frozen: its heartbeat goes stale, as if it were dead
    b = start_worker("--queues", "acme")
    wait_until(lambda: control.get_job(runtime, job.id)["status"] == "succeeded", 30)
    result = control.get_job(runtime, job.id)["result"]
    a.signal(signal.SIGCONT)  # it wakes up and tries to carry on with the job
    a.wait_for_log(f"JOB LOST job_id={job.id}", timeout=10)
    got = control.get_job(runtime, job.id)
    assert got["status"] == "succeeded" and got["result"] == result
    assert f"JOB DONE job_id={job.id}" in b.log()
    assert f"JOB DONE job_id={job.id}" not in a.log()
    assert [item for item, _ in ticks(runtime, job.id)] == list(range(n))


def test_stale_job_without_attempts_left_fails(runtime, business):
    job = enqueue(runtime, "acme_echo", business, {"message": "x"})
    with runtime.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE background_jobs SET status='running', attempts=max_attempts, fence=1, "
                "heartbeat_at = now() - interval '1 hour' WHERE id = :id"
            ),
            {"id": job.id},
        )
    report = sweep(runtime)
    assert report.failed == [job.id]
    got = control.get_job(runtime, job.id)
    assert got["status"] == "failed" and "worker lost" in got["error"]


def test_one_sweeper_at_a_time(runtime, business):
    job = enqueue(runtime, "acme_echo", business, {"message": "x"})
    runtime.redis.flushdb()
    with runtime.engine.begin() as conn:  # another worker is sweeping
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_KEY})
        assert sweep(runtime, grace=0).skipped
    assert sweep(runtime, grace=0).repushed == [job.id]


def test_job_accepted_while_redis_is_down_runs_later(runtime, business, env, start_worker):
    from prosaas_core.runtime import Runtime
    from prosaas_core.settings import Settings

    down = Runtime(Settings.from_env({**env, "REDIS_URL": "redis://127.0.0.1:1/0"}), pm=runtime.pm)
    job = enqueue(down, "acme_echo", business, {"message": "kept"})
    assert job.created and not job.pushed
    assert control.get_job(runtime, job.id)["status"] == "queued"
    w = start_worker("--burst")
    assert w.wait(60) == 0
    assert control.get_job(runtime, job.id)["result"] == {"echo": "kept", "attempt": 1}


def test_an_outage_is_one_warning_per_period_not_one_per_enqueue(
    runtime, business, env, caplog, monkeypatch
):
    from prosaas_core.jobs import pushlog
    from prosaas_core.runtime import Runtime
    from prosaas_core.settings import Settings

    monkeypatch.setattr(pushlog, "WARN_EVERY", 2.0)
    down = Runtime(Settings.from_env({**env, "REDIS_URL": "redis://127.0.0.1:1/0"}), pm=runtime.pm)
    caplog.set_level("WARNING", logger="prosaas.jobs")
    jobs = [enqueue(down, "acme_echo", business, {"message": str(i)}) for i in range(5)]
    time.sleep(2.1)
    jobs.append(enqueue(down, "acme_echo", business, {"message": "later"}))
    assert not any(j.pushed for j in jobs)
    warned = [r.getMessage() for r in caplog.records if "Redis unavailable" in r.getMessage()]
    assert len(warned) == 2, warned
    assert f"job {jobs[0].id} stays queued for the sweeper: " in warned[0]
    assert f"job {jobs[-1].id} stays queued for the sweeper (4 more since" in warned[1]


def _age(rt, job_id: int, seconds: int) -> None:
    with rt.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE background_jobs SET updated_at = now() - make_interval(secs => :s) "
                "WHERE id = :id"
            ),
            {"s": seconds, "id": job_id},
        )


def test_a_queued_job_popped_by_a_worker_killed_before_its_mark_runs(
    runtime, business, start_worker
):
    """An idle worker on several queues pops with BLPOP and marks the job a round trip later:
    killed in between, it leaves the job's hash saying queued and its id in no list. The
    sweeper finds it in no list once it is old enough and pushes it again; an old job still
    in its list is left alone."""
    from rq import Queue

    from prosaas_core.jobs.sweeper import ORPHAN_AFTER

    orphan = enqueue(runtime, "acme_echo", business, {"message": "orphan"})
    waiting = enqueue(runtime, "acme_echo", business, {"message": "backlog"})
    key = Queue("default", connection=runtime.redis).key
    assert runtime.redis.lpop(key).decode().endswith(f"-{orphan.id}")  # what BLPOP took
    assert runtime.redis.hget(f"rq:job:prosaas-{orphan.id}", "status") == b"queued"
    _age(runtime, orphan.id, int(ORPHAN_AFTER) - 5)
    _age(runtime, waiting.id, int(ORPHAN_AFTER) + 5)
    assert sweep(runtime).repushed == []  # too young to be suspected; the other is listed
    _age(runtime, orphan.id, int(ORPHAN_AFTER) + 5)
    assert sweep(runtime).repushed == [orphan.id]
    assert runtime.redis.llen(key) == 2  # pushed once, the listed one not again
    w = start_worker("--burst")
    assert w.wait(60) == 0, w.log()
    for job in (orphan, waiting):
        got = control.get_job(runtime, job.id)
        assert (got["status"], got["attempts"]) == ("succeeded", 1), got


def test_the_last_line_about_pushes_is_never_a_stale_warning(caplog, monkeypatch):
    """A process's push lines are rate-limited, but a warning is always followed by a "work
    again" line once pushes work, even one within the limit of the previous such line."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    from prosaas_core.jobs import pushlog

    monkeypatch.setattr(pushlog, "WARN_EVERY", 2.0)
    caplog.set_level("WARNING", logger="prosaas.jobs")
    plog = pushlog.PushLog()
    refused = RedisConnectionError("refused")
    plog.failed(1, refused)  # t=0: warned
    time.sleep(1.0)
    plog.worked()  # t=1: work again
    time.sleep(1.1)
    plog.failed(2, refused)  # t=2.1: warned (2 s after the first warning)
    plog.worked()  # t=2.1: 1.1 s after the last "work again", and said anyway
    said = [r.getMessage() for r in caplog.records if r.name == "prosaas.jobs"]
    assert [m.split(",")[0].split(":")[0] for m in said] == [
        "Redis unavailable",
        "Redis pushes work again",
        "Redis unavailable",
        "Redis pushes work again",
    ], said
