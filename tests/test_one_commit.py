"""One PostgreSQL commit per job in `prosaas worker`: a job's outcome is written by the next
job's claim (jobs/dispatch.py), and never held back while the worker waits, stops or finds its
job taken over."""

from __future__ import annotations

import signal
import threading

import psycopg2

from prosaas_core.jobs import control
from prosaas_core.jobs.dispatch import Dispatcher
from prosaas_core.jobs.enqueue import enqueue
from prosaas_core.testing import wait_until


def _settled_commits(runtime, env: dict[str, str]) -> int:
    """Transactions committed in the test database, once no backend is connected to it and the
    counter has stopped moving (a backend's statistics reach pg_stat_database at the latest
    when it exits). Read from another database, so the reads count nothing themselves."""
    runtime.engine.dispose()  # the test's own pooled connections: closed, their counts flushed
    url = env["DATABASE_URL"].replace("postgresql+psycopg2://", "postgresql://")
    name = url.rsplit("/", 1)[1]
    conn = psycopg2.connect(url.rsplit("/", 1)[0] + "/postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:

            def read() -> tuple[int, int]:
                cur.execute("SELECT pg_stat_clear_snapshot()")
                cur.execute(
                    "SELECT (SELECT count(*) FROM pg_stat_activity WHERE datname = %(d)s), "
                    "(SELECT xact_commit FROM pg_stat_database WHERE datname = %(d)s)",
                    {"d": name},
                )
                backends, commits = cur.fetchone()
                return int(backends), int(commits)

            last = None

            def settled() -> int | None:
                nonlocal last
                backends, commits = read()
                done = backends == 0 and commits == last
                last = commits
                return commits if done else None

            return wait_until(settled, 20, "the commit counter to settle", step=0.3)
    finally:
        conn.close()


def _drain(runtime, env, start_worker, business, n: int) -> int:
    """Commits a burst worker made draining `n` fresh acme_echo jobs (start-up included)."""
    ids = [enqueue(runtime, "acme_echo", business, {"message": str(i)}).id for i in range(n)]
    before = _settled_commits(runtime, env)
    no_services = ",".join(runtime.registry.services)
    w = start_worker("--burst", extra_env={"PROSAAS_DISABLE_SERVICES": no_services})
    assert w.wait(60) == 0, w.log()
    commits = _settled_commits(runtime, env) - before
    assert all(control.get_job(runtime, i)["status"] == "succeeded" for i in ids)
    return commits


def test_a_drained_job_costs_one_commit(runtime, env, business, start_worker):
    """The difference between draining 320 jobs and 20 is 300 jobs' commits, whatever the
    worker's start-up and shutdown cost: two per job before the outcome rode on the next
    claim, one now."""
    few = _drain(runtime, env, start_worker, business, 20)
    many = _drain(runtime, env, start_worker, business, 320)
    per_job = (many - few) / 300
    assert 0.9 <= per_job <= 1.25, (few, many, per_job)


def test_the_last_outcome_is_written_when_the_worker_stops(runtime, business, start_worker):
    """SIGTERM while a handler that does not look at should_stop() runs: the job ends,
    its outcome is written on the way out (nothing left for a hand-back or a rescue), and the
    job queued behind it is left queued for the next worker."""
    w = start_worker("--queues", "flow")
    w.wait_for_log("WORKER STARTED")
    first = enqueue(runtime, "acme_slot", business, {"seconds": 1.5}).id
    second = enqueue(runtime, "acme_slot", business, {"seconds": 0}).id
    w.wait_for_log(f"JOB PICKED queue='flow' job_id={first}")
    w.signal(signal.SIGTERM)
    assert w.wait(20) == 0, w.log()
    job = control.get_job(runtime, first)
    assert (job["status"], job["attempts"]) == ("succeeded", 1), (job, w.log())
    assert f"JOB DONE job_id={first}" in w.log()
    assert control.get_job(runtime, second)["status"] == "queued"


def test_a_held_back_outcome_is_fenced_like_any_other(runtime, business):
    """The outcome the next claim carries is refused when the job was taken over meanwhile
    (its fence moved on); the next job is claimed all the same."""
    from sqlalchemy import text

    disp = Dispatcher(runtime, "held-back", threading.Event(), prepare=True)
    a = enqueue(runtime, "acme_echo", business, {"message": "a"}).id
    b = enqueue(runtime, "acme_echo", business, {"message": "b"}).id
    try:
        disp.run(a, defer=True)  # ran; its outcome waits for the next claim
        with runtime.engine.begin() as conn:  # what a rescue does to the row
            conn.execute(
                text(
                    "UPDATE background_jobs SET fence = fence + 1, worker = 'other' WHERE id = :id"
                ),
                {"id": a},
            )
        disp.run(b, defer=True)
        disp.flush()
    finally:
        disp.stop()
    lost = control.get_job(runtime, a)
    assert (lost["status"], lost["worker"], lost["result"]) == ("running", "other", None)
    assert control.get_job(runtime, b)["status"] == "succeeded"


def test_the_prepared_statements_are_prepared_again_when_gone_or_stale(runtime, business):
    """The kept connection's prepared statements dropped behind its back (DEALLOCATE ALL, as a
    DISCARD would) or planned before a migration changed a column's type: the next job
    prepares them afresh and runs, nothing lost."""
    disp = Dispatcher(runtime, "re-prepare", threading.Event(), prepare=True)
    ids = [enqueue(runtime, "acme_echo", business, {"message": m}).id for m in "abcd"]
    try:
        disp.run(ids[0], defer=True)
        disp.run(ids[1], defer=True)
        with disp.connect() as db:
            db._conn.cursor().execute("DEALLOCATE ALL")
        disp.run(ids[2], defer=True)
        with runtime.engine.begin() as conn:  # the claim's RETURNING changes type
            conn.exec_driver_sql("ALTER TABLE background_jobs ALTER COLUMN attempts TYPE bigint")
        disp.run(ids[3], defer=True)
        disp.flush()
    finally:
        disp.stop()
    assert [control.get_job(runtime, i)["status"] for i in ids] == ["succeeded"] * 4


def test_an_outcome_is_not_held_while_nothing_comes_to_claim_it(runtime, business):
    """Nothing calls the worker back (its next pop stuck behind a Redis that does not
    answer, say): the held-back outcome is written alone within about a second."""
    from prosaas_core.jobs.dispatch import HOLD_MAX

    disp = Dispatcher(runtime, "held", threading.Event(), prepare=True)
    job = enqueue(runtime, "acme_echo", business, {"message": "a"}).id
    try:
        disp.run(job, defer=True)
        assert control.get_job(runtime, job)["status"] == "running"  # held back
        wait_until(
            lambda: control.get_job(runtime, job)["status"] == "succeeded",
            HOLD_MAX + 2,
            "the held-back outcome to be written",
        )
    finally:
        disp.stop()


def test_an_outcome_refused_with_the_next_claim_is_written_apart(runtime, business):
    """The statement carrying job A's outcome and job B's claim is refused for A's part (here
    a CHECK an operator added rejects A's error): B is claimed and runs all the same, and A,
    whose outcome cannot be written, is handed back (its last attempt: it ends failed)."""
    from sqlalchemy import text

    with runtime.engine.begin() as conn:
        conn.execute(
            text(
                "ALTER TABLE background_jobs ADD CONSTRAINT chk_test_no_purpose "
                "CHECK (error IS NULL OR error NOT LIKE '%on purpose%')"
            )
        )
    a = enqueue(runtime, "acme_fail", business, {"fail_times": 10}).id
    b = enqueue(runtime, "acme_echo", business, {"message": "b"}).id
    with runtime.engine.begin() as conn:  # A's last attempt comes next
        conn.execute(text("UPDATE background_jobs SET attempts = 2 WHERE id = :id"), {"id": a})
    disp = Dispatcher(runtime, "apart", threading.Event(), prepare=True)
    try:
        disp.run(a, defer=True)  # failed for good; the outcome is held back
        disp.run(b, defer=True)
        disp.flush()
    finally:
        disp.stop()
    got = control.get_job(runtime, a)
    assert got["status"] == "failed" and got["error"].startswith("worker lost: its outcome"), got
    assert control.get_job(runtime, b)["status"] == "succeeded"
