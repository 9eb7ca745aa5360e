"""Lost rows are found in one sweep whatever the backlog Redis still holds, and `prosaas
doctor` names the rows no worker will ever receive."""

from __future__ import annotations

from sqlalchemy import text

from prosaas_core.jobs import control, sweeper
from prosaas_core.jobs.enqueue import enqueue
from prosaas_core.jobs.transport import push_many
from prosaas_core.testing import wait_until

HELD = 2500  # more than one keyset page (sweeper.BATCH)


def _bulk_queued(runtime, business, n: int, queue: str, job_type: str, payload: str) -> list:
    """`n` committed queued rows an hour old, as `(id, queue, job_type)`."""
    with runtime.engine.begin() as conn:
        ids = conn.execute(
            text(
                "INSERT INTO background_jobs (business_id, job_type, queue, status, payload, "
                "max_attempts, updated_at) SELECT :b, :t, :q, 'queued', CAST(:p AS jsonb), 3, "
                "now() - interval '1 hour' FROM generate_series(1, :n) RETURNING id"
            ),
            {"b": business, "t": job_type, "q": queue, "p": payload, "n": n},
        ).scalars()
        return [(i, queue, job_type) for i in sorted(ids)]


def _backlog_and_lost(runtime, business):
    held = _bulk_queued(runtime, business, HELD, "acme", "acme_count", '{"n": 1}')
    assert push_many(runtime, held) == [r[0] for r in held]
    # committed while Redis was unreachable: never pushed
    lost = _bulk_queued(runtime, business, 5, "default", "acme_echo", '{"message": "late"}')
    return held, [r[0] for r in lost]


def test_one_sweep_finds_lost_rows_behind_a_held_backlog(runtime, business):
    assert HELD > sweeper.BATCH
    _, lost = _backlog_and_lost(runtime, business)
    # a retry waiting for its backoff is not lost, even though Redis does not hold it
    later = enqueue(runtime, "acme_echo", business, {"message": "later"}).id
    with runtime.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE background_jobs SET run_after = now() + interval '1 hour', "
                "updated_at = now() - interval '1 hour' WHERE id = :i"
            ),
            {"i": later},
        )
    runtime.redis.delete(f"rq:job:prosaas-{later}")
    report = sweeper.sweep(runtime, grace=0)
    assert report.repushed == lost
    assert sweeper.sweep(runtime, grace=0).repushed == []  # now held


def test_worker_on_another_queue_runs_lost_jobs_and_doctor_sees_them(
    runtime, business, cli, start_worker
):
    _, lost = _backlog_and_lost(runtime, business)
    res = cli("doctor")
    assert res.returncode == 1
    assert (
        "PROBLEM queue 'default': 5 queued job(s) due for over 7s but not in Redis, so no "
        f"worker will receive them ({', '.join(map(str, lost))})" in res.stdout
    ), res.stdout
    # the held backlog is pending, not stranded
    stranded = [line for line in res.stdout.splitlines() if "not in Redis" in line]
    assert len(stranded) == 1 and "queue 'default'" in stranded[0]
    start_worker("--queues", "default")
    wait_until(
        lambda: all(control.get_job(runtime, i)["status"] == "succeeded" for i in lost),
        20,
        "the lost jobs done",
    )
    assert "not in Redis" not in cli("doctor").stdout
