"""Who the sweeper takes a running job from: a worker whose lease lapsed, or one without a lease
whose job heartbeat is stale; never a worker whose lease holds."""

from __future__ import annotations

from sqlalchemy import text

from prosaas_core.jobs import control
from prosaas_core.jobs.enqueue import enqueue
from prosaas_core.jobs.sweeper import sweep


def _running(runtime, business, worker: str | None, heartbeat_age: str) -> int:
    job = enqueue(runtime, "acme_echo", business, {"message": "x"}).id
    with runtime.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE background_jobs SET status = 'running', attempts = 1, fence = 1, "
                f"worker = :w, heartbeat_at = now() - interval '{heartbeat_age}' WHERE id = :i"
            ),
            {"w": worker, "i": job},
        )
    return job


def _lease(runtime, worker: str, expires_in: str) -> None:
    with runtime.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO prosaas_worker_leases (worker, expires_at, renewed_at) "
                f"VALUES (:w, now() + interval '{expires_in}', now())"
            ),
            {"w": worker},
        )


def test_rescue_follows_leases_then_heartbeats(runtime, business):
    _lease(runtime, "alive", "1 hour")
    _lease(runtime, "dead", "-1 second")
    alive = _running(runtime, business, "alive", "1 hour")  # a long transaction: stale beat
    dead = _running(runtime, business, "dead", "1 second")  # fresh beat, lapsed lease
    leaseless = _running(runtime, business, "rq.host:1", "1 hour")
    fresh = _running(runtime, business, "rq.host:2", "1 second")
    report = sweep(runtime, grace=0)
    assert sorted(report.rescued) == sorted([dead, leaseless])
    assert control.get_job(runtime, alive)["status"] == "running"
    assert control.get_job(runtime, fresh)["status"] == "running"
    # right after its own database outage a sweeper gives leases time: heartbeats only
    dead2 = _running(runtime, business, "dead", "1 second")
    assert sweep(runtime, grace=0, leases=False).rescued == []
    assert sweep(runtime, grace=0).rescued == [dead2]
