"""The two promises of the issue under real processes: one accepted message per recipient
when a worker is SIGKILLed mid-broadcast (twice), and the business's rate across two workers."""

from __future__ import annotations

import math
import signal

import pytest
from prosaas_broadcast.testing import job, many_leads, wait_broadcast
from sqlalchemy import text

from prosaas_core.testing import wait_until

pytestmark = pytest.mark.slow


def _worker(start_worker, **extra):
    return start_worker("--queues", "messaging", extra_env={k: str(v) for k, v in extra.items()})


def _jobs_of(runtime) -> list[dict]:
    with runtime.session() as s:
        rows = s.execute(text("SELECT id, status, payload FROM background_jobs ORDER BY id"))
        return [dict(r._mapping) for r in rows]


def test_2000_recipients_exactly_once_with_a_worker_sigkilled_twice(
    runtime, client, auth, business, fake, start_worker
):
    n = 2000
    ids = many_leads(runtime, business, n)
    threads = 2
    settings = dict(
        BROADCAST_RATE="200/s",
        BROADCAST_PART_SIZE=250,
        BROADCAST_MAX_PARTS=8,
        BROADCAST_SENDER_THREADS=threads,
    )
    victim = _worker(start_worker, **settings)
    _worker(start_worker, **settings)
    resp = client.post("/api/broadcasts", json={"all": True, "template": "Hi {name}"}, headers=auth)
    bid = resp.get_json()["id"]
    for share in (0.25, 0.6):
        wait_until(lambda s=share: len(fake.accepted) >= n * s, 60, f"{share:.0%} sent")
        victim.signal(signal.SIGKILL)
        victim.wait()
        victim = _worker(start_worker, **settings)
    b = wait_broadcast(client, auth, bid, timeout=120)
    assert b["status"] == "succeeded" and b["counts"]["sent"] == n, b
    keys = [k for _, k, _, _ in fake.accepted]
    assert sorted(keys) == sorted(f"{bid}:{lead}" for lead in ids)  # each exactly once
    assert max(fake.keys.values()) <= 2
    # a repeat is only ever a message in flight in a killed worker (one per sending thread),
    # re-sent with its key
    assert sum(fake.repeats.values()) <= 2 * threads, fake.repeats
    jobs = _jobs_of(runtime)
    assert len(jobs) >= 2 and {j["payload"]["broadcast_id"] for j in jobs} == {bid}
    wait_until(lambda: all(job(runtime, j["id"])["status"] == "succeeded" for j in jobs), 60)


def test_two_workers_keep_to_the_business_rate(runtime, client, auth, business, fake, start_worker):
    n, rate = 500, 50
    burst = math.ceil(rate / 10)  # the core's default burst: a tenth of a second's worth
    many_leads(runtime, business, n)
    settings = dict(BROADCAST_RATE=f"{rate}/s", BROADCAST_PART_SIZE=250, BROADCAST_MAX_PARTS=2)
    _worker(start_worker, **settings), _worker(start_worker, **settings)
    resp = client.post("/api/broadcasts", json={"all": True, "template": "Hi"}, headers=auth)
    b = wait_broadcast(client, auth, resp.get_json()["id"], timeout=60)
    assert b["counts"]["sent"] == n
    times = fake.accepted_times()
    assert fake.max_window(1.0) <= rate + burst, fake.max_window(1.0)
    took, expected = times[-1] - times[0], n / rate
    assert abs(took - expected) <= 0.15 * expected, (took, expected)
    # both workers sent a share of it
    assert len({j["id"] for j in _jobs_of(runtime)}) == 2
