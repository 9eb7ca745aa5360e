"""Per-business flow control end to end: real `prosaas worker` processes, PostgreSQL and Redis.

The acme test plugin's `acme_slot` (concurrency_per_business=2) and `acme_rate`
(rate_per_business="20/s") record each run in `acme_runs` with wall-clock start and end, so the
tests check what actually ran, when.
"""

from __future__ import annotations

import json
import signal
import time

import pytest
import redis
from sqlalchemy import text

from prosaas_core.jobs import control
from prosaas_core.jobs.enqueue import enqueue
from prosaas_core.models import Business
from prosaas_core.testing import wait_until

LEASE = 3.0


@pytest.fixture
def flow_env(env):
    env.update(PROSAAS_FLOW_LEASE=str(LEASE))
    return env


@pytest.fixture
def flow_rt(flow_env):
    from prosaas_core import migrate
    from prosaas_core.plugins import get_plugin_manager
    from prosaas_core.runtime import Runtime
    from prosaas_core.settings import Settings

    rt = Runtime(Settings.from_env(flow_env), pm=get_plugin_manager(load_entrypoints=True))
    migrate.upgrade(rt)
    yield rt
    rt.close()


def businesses(rt, n: int) -> list[int]:
    with rt.session() as s:
        rows = [Business(name=f"b{i}") for i in range(n)]
        s.add_all(rows)
        s.flush()
        return [b.id for b in rows]


def runs(rt) -> list[dict]:
    with rt.engine.connect() as conn:
        return [
            dict(r._mapping)
            for r in conn.execute(text("SELECT * FROM acme_runs ORDER BY started_at"))
        ]


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The largest number of intervals open at one instant."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    best = cur = 0
    for _, d in events:  # an end sorts before a start at the same instant
        cur += d
        best = max(best, cur)
    return best


def status_counts(rt) -> dict[str, int]:
    with rt.engine.connect() as conn:
        rows = conn.execute(text("SELECT status, count(*) FROM background_jobs GROUP BY 1"))
        return dict(rows.all())


def all_done(rt, n: int) -> bool:
    return status_counts(rt).get("succeeded", 0) >= n


def test_concurrency_per_business_holds_across_two_workers(flow_rt, flow_env, start_worker):
    bs = businesses(flow_rt, 3)
    for b in bs:
        for _ in range(30):
            enqueue(flow_rt, "acme_slot", b, {"seconds": 0.05})
    parked = control.list_jobs(flow_rt, status="queued", limit=200)
    assert any(j.get("parked") for j in parked), "jobs over the limit wait parked"
    w1, w2 = start_worker(), start_worker()
    wait_until(lambda: all_done(flow_rt, 90), 120, "90 jobs done")
    got = runs(flow_rt)
    assert len(got) == 90 and {r["job_id"] for r in got} == set(range(1, 91))
    for b in bs:
        spans = [(r["started_at"], r["finished_at"]) for r in got if r["business_id"] == b]
        assert max_overlap(spans) <= 2
    assert max_overlap([(r["started_at"], r["finished_at"]) for r in got]) == 2  # both busy
    assert {r["worker_pid"] for r in got} == {w1.pid, w2.pid}
    assert status_counts(flow_rt) == {"succeeded": 90}


def test_small_business_is_not_starved_by_a_big_backlog(flow_rt, start_worker):
    big, small = businesses(flow_rt, 2)
    for _ in range(2000):
        enqueue(flow_rt, "acme_slot", big, {"seconds": 0.02})
    small_ids = [enqueue(flow_rt, "acme_slot", small, {"seconds": 0.02}).id for _ in range(5)]
    start_worker(), start_worker()

    def small_started():
        return sum(1 for r in runs(flow_rt) if r["job_id"] in small_ids) == 5

    wait_until(small_started, 60, "the small business's 5 jobs to start")
    got = runs(flow_rt)
    last_small = max(r["started_at"] for r in got if r["job_id"] in small_ids)
    big_before = sum(1 for r in got if r["business_id"] == big and r["started_at"] <= last_small)
    assert big_before < 50, f"{big_before} of the big business's jobs ran first"


def test_rate_per_business_across_two_workers(flow_rt, start_worker):
    (b,) = businesses(flow_rt, 1)
    for _ in range(200):
        enqueue(flow_rt, "acme_rate", b, {})
    t0 = time.time()
    start_worker(), start_worker()
    wait_until(lambda: all_done(flow_rt, 200), 60, "200 jobs done")
    starts = sorted(r["started_at"] for r in runs(flow_rt))
    assert len(starts) == 200
    burst = 2  # parse_rate("20/s").burst
    for i, s in enumerate(starts):  # every one-second window starting at a start
        in_window = sum(1 for x in starts[i:] if x < s + 1.0)
        assert in_window <= 20 + burst, f"{in_window} starts in the second after {s - t0:.2f}s"
    elapsed = starts[-1] - starts[0]
    gaps = [round(b - a, 3) for a, b in zip(starts, starts[1:], strict=False) if b - a > 0.08]
    assert 10.0 * 0.85 <= elapsed + 1 / 20 <= 10.0 * 1.15, (elapsed, gaps)


def test_sigkill_and_flush_lose_nothing_and_bound_the_overshoot(flow_rt, flow_env, start_worker):
    (b,) = businesses(flow_rt, 1)
    ids = [enqueue(flow_rt, "acme_slot", b, {"seconds": 0.5}).id for _ in range(20)]
    w1 = start_worker()
    start_worker()
    wait_until(lambda: any(r["worker_pid"] == w1.pid for r in runs(flow_rt)), 30, "w1 runs a job")
    w1.signal(signal.SIGKILL)  # dies holding a slot: it comes back within one lease
    time.sleep(1.0)
    redis.Redis.from_url(flow_env["REDIS_URL"]).flushdb()  # slots, flags, RQ queues: gone
    start_worker()
    wait_until(lambda: all_done(flow_rt, 20), 120, "20 jobs done")
    got = runs(flow_rt)
    assert {r["job_id"] for r in got} == set(ids)
    finished = [(r["started_at"], r["finished_at"]) for r in got if r["finished_at"]]
    # documented bound: after a flush, what was in flight for one lease may run beside new
    # starts: at most the limit again
    assert max_overlap(finished) <= 4
    assert status_counts(flow_rt) == {"succeeded": 20}


def test_a_slot_admitted_long_ago_is_taken_again_at_the_start(flow_rt, start_worker):
    """A job started soon after its admission trusts the slot admission took (one round trip
    fewer per job); one that waited in RQ past half a lease must take it again, since its
    lease may have run out and another job may hold the slot now."""
    from prosaas_core.jobs.flow import set_override

    (b,) = businesses(flow_rt, 1)
    set_override(flow_rt, b, "acme_slot", concurrency=1, rate=None)
    stale = enqueue(flow_rt, "acme_slot", b, {"seconds": 1.0})
    time.sleep(LEASE + 0.5)  # the stale job's slot expires, nobody having started it
    fresh = enqueue(flow_rt, "acme_slot", b, {"seconds": 1.0})
    assert stale.pushed is True and fresh.pushed is True  # both admitted, neither parked
    start_worker(), start_worker()
    wait_until(lambda: all_done(flow_rt, 2), 60, "both jobs done")
    got = runs(flow_rt)
    assert {r["job_id"] for r in got} == {stale.id, fresh.id}
    assert max_overlap([(r["started_at"], r["finished_at"]) for r in got]) == 1


def test_override_takes_effect_within_one_lease(flow_rt, flow_env, cli, start_worker):
    (b,) = businesses(flow_rt, 1)
    for _ in range(40):
        enqueue(flow_rt, "acme_slot", b, {"seconds": 0.4})
    for _ in range(3):
        start_worker()
    wait_until(lambda: len(runs(flow_rt)) >= 4, 30, "some runs")
    changed = cli(
        "limits", "set", "acme_slot", "--business", str(b), "--concurrency", "3", check=True
    )
    assert "concurrency 3" in changed.stdout
    t_change = time.time()
    wait_until(lambda: all_done(flow_rt, 40), 120, "40 jobs done")
    got = runs(flow_rt)
    before = [(r["started_at"], r["finished_at"]) for r in got if r["finished_at"] < t_change]
    after = [(r["started_at"], r["finished_at"]) for r in got if r["started_at"] > t_change + LEASE]
    assert max_overlap(before) <= 2
    assert max_overlap(after) == 3
    shown = json.loads(cli("limits", "list", "--json", check=True).stdout)
    assert shown == [{"business_id": b, "job_type": "acme_slot", "concurrency": 3, "rate": None}]


def test_what_limits_hold_back_is_shown_everywhere(runtime, cli):
    from prosaas_core.api.app import create_app

    flow_rt = runtime  # the default 30 s lease: admitted jobs keep their slots meanwhile
    (b,) = businesses(flow_rt, 1)
    ids = [enqueue(flow_rt, "acme_slot", b, {}).id for _ in range(5)]
    shown = json.loads(cli("jobs", "show", str(ids[-1]), "--json", check=True).stdout)
    assert shown["status"] == "queued"
    assert shown["parked"] == "concurrency: 2/2 slots held"
    assert (
        json.loads(cli("jobs", "show", str(ids[0]), "--json", check=True).stdout)["parked"] is None
    )

    listing = cli("jobs", "list", check=True).stdout
    assert "parked: concurrency: 2/2 slots held" in listing
    assert "flow limits:" in listing
    assert f"{b:>8}  {'acme_slot':<24} {'2/2':>7}" in listing

    (status,) = json.loads(cli("limits", "status", "--json", check=True).stdout)
    assert status == {
        "job_type": "acme_slot",
        "business_id": b,
        "concurrency": 2,
        "rate": None,
        "running": 0,
        "queued": 2,
        "parked": 3,
        "parked_reasons": {"concurrency: 2/2 slots held": 3},
        "slots_held": 2,
        "rate_used": None,
    }
    doctor = cli("doctor").stdout
    assert (
        f"flow acme_slot business {b}: slots 2/2, no rate, 0 running, 3 parked "
        "(3 concurrency: 2/2 slots held)" in doctor
    )
    metrics = create_app(runtime=flow_rt).test_client().get("/metrics").get_data(as_text=True)
    assert f'prosaas_flow_slots_held{{business_id="{b}",job_type="acme_slot"}} 2.0' in metrics
    assert (
        f'prosaas_flow_parked_jobs{{business_id="{b}",job_type="acme_slot",reason="concurrency"}}'
        " 3.0" in metrics
    )


def test_limits_cli_refuses_bad_input_in_one_line(flow_rt, cli):
    (b,) = businesses(flow_rt, 1)
    for args, message in [
        (["acme_slot", "--business", str(b), "--rate", "fast"], "invalid rate 'fast'"),
        (["nope", "--business", str(b), "--concurrency", "2"], "nope"),
        (["acme_slot", "--business", "999999", "--concurrency", "2"], "business 999999 not found"),
        (["acme_slot", "--business", str(b)], "give --concurrency and/or --rate"),
    ]:
        res = cli("limits", "set", *args)
        assert res.returncode != 0, args
        assert message in res.stderr and "Traceback" not in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) <= 3
    assert (
        cli("limits", "set", "acme_rate", "--business", str(b), "--rate", "5/min").returncode == 0
    )
    assert json.loads(cli("limits", "list", "--json", check=True).stdout)[0]["rate"] == "5/min"
    assert cli("limits", "clear", "acme_rate", "--business", str(b)).returncode == 0
    assert json.loads(cli("limits", "list", "--json", check=True).stdout) == []
    assert cli("limits", "clear", "acme_rate", "--business", str(b)).returncode == 1
