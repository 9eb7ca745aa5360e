"""Jobs at a time and cron schedules: real `prosaas worker` processes, PostgreSQL and Redis."""

from __future__ import annotations

import json
import signal
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import redis
from sqlalchemy import text

from prosaas_core import schedules
from prosaas_core.errors import TimingError
from prosaas_core.jobs import control
from prosaas_core.jobs.enqueue import enqueue
from prosaas_core.models import Business
from prosaas_core.testing import wait_until

NY = "America/New_York"


def businesses(rt, n: int) -> list[int]:
    with rt.session() as s:
        rows = [Business(name=f"b{i}") for i in range(n)]
        s.add_all(rows)
        s.flush()
        return [b.id for b in rows]


def runs(rt, name: str) -> list[tuple[datetime, int, str]]:
    with rt.engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                text(
                    "SELECT r.occurrence_at, r.business_id, r.fired_by FROM prosaas_schedule_runs r"
                    " JOIN prosaas_schedules s ON s.id = r.schedule_id WHERE s.name = :n"
                    " ORDER BY r.occurrence_at, r.business_id"
                ),
                {"n": name},
            )
        ]


# -- occurrences ------------------------------------------------------------------------------


def test_occurrences_across_dst_changes():
    tz = ZoneInfo(NY)
    spring = datetime(2026, 3, 7, 12, tzinfo=tz)  # clocks jump 02:00 -> 03:00 on 8 March
    got = list(schedules.occurrences("30 2 * * *", NY, spring, spring + timedelta(days=3)))
    assert [o.astimezone(tz).strftime("%m-%d %H:%M") for o in got] == [
        "03-08 03:00",  # 02:30 does not exist that night: the first valid time after it
        "03-09 02:30",
        "03-10 02:30",
    ]
    fall = datetime(2026, 10, 31, 12, tzinfo=tz)  # 01:00-02:00 happens twice on 1 November
    got = list(schedules.occurrences("30 1 * * *", NY, fall, fall + timedelta(days=2)))
    assert len(got) == 2, got  # once on the repeated night, not twice
    assert [o.astimezone(tz).strftime("%m-%d %H:%M") for o in got] == ["11-01 01:30", "11-02 01:30"]
    assert got[1] - got[0] == timedelta(hours=25)  # the fall-back night is an hour longer
    day = datetime(2026, 11, 1, 0, 0, tzinfo=tz)
    hourly = list(schedules.occurrences("0 * * * *", NY, day - timedelta(seconds=1),
                                        day + timedelta(hours=24, seconds=-1)))  # fmt: skip
    assert len(hourly) == 25  # every real hour, both passes of 01:00


def test_six_field_cron_has_seconds_and_bad_definitions_are_refused():
    start = datetime(2026, 1, 1, tzinfo=UTC)
    got = list(schedules.occurrences("* * * * * */15", "UTC", start, start + timedelta(minutes=1)))
    assert [o.second for o in got] == [15, 30, 45, 0]
    for cron, tz, catch_up, jitter, msg in [
        ("61 * * * *", "UTC", "skip", 0, "invalid cron"),
        ("* * * * *", "Mars/Olympus", "skip", 0, "unknown time zone"),
        ("* * * * *", "UTC", "sometimes", 0, "catch_up must be one of"),
        ("* * * * *", "UTC", "skip", -1, "jitter"),
    ]:
        with pytest.raises(TimingError, match=msg):
            schedules.check_definition(cron, tz, catch_up, jitter)


# -- jobs at a time ---------------------------------------------------------------------------


@pytest.fixture
def sched_env(env):
    env.update(PROSAAS_SCHEDULE_TICK="0.2", PROSAAS_SCHEDULE_GRACE="2")
    return env


def test_run_at_jobs_are_durable_and_a_past_time_is_now(runtime, business, start_worker, env):
    soon = enqueue(runtime, "acme_echo", business, {"message": "later"}, delay=2)
    past = enqueue(
        runtime, "acme_echo", business, {"message": "now"},
        run_at=datetime.now(UTC) - timedelta(hours=1),
    )  # fmt: skip
    assert control.get_job(runtime, soon.id)["run_after"] is not None
    assert control.get_job(runtime, past.id)["run_after"] is None
    redis.Redis.from_url(env["REDIS_URL"]).flushdb()  # before they are due: Redis loses both
    t0 = time.time()
    start_worker()
    wait_until(lambda: control.get_job(runtime, past.id)["status"] == "succeeded", 30, "past job")
    assert control.get_job(runtime, soon.id)["status"] == "queued"  # not before its time
    wait_until(lambda: control.get_job(runtime, soon.id)["status"] == "succeeded", 30, "due job")
    started = datetime.fromisoformat(control.get_job(runtime, soon.id)["started_at"])
    assert started.timestamp() >= t0 + 1.5


def test_jobs_enqueue_at_and_in(cli, business):
    res = cli("jobs", "enqueue", "acme_echo", "--business", str(business), "--payload",
              '{"message": "x"}', "--in", "60", "--json", check=True)  # fmt: skip
    job = json.loads(cli("jobs", "show", str(json.loads(res.stdout)["id"]), "--json").stdout)
    due = datetime.fromisoformat(job["run_after"])
    assert 50 < (due - datetime.now(UTC)).total_seconds() <= 60
    at = cli("jobs", "enqueue", "acme_echo", "--business", str(business), "--payload",
             '{"message": "x"}', "--at", "2027-06-01T09:30:00+02:00", "--json")  # fmt: skip
    job = json.loads(cli("jobs", "show", str(json.loads(at.stdout)["id"]), "--json").stdout)
    assert datetime.fromisoformat(job["run_after"]) == datetime(2027, 6, 1, 7, 30, tzinfo=UTC)
    for args, msg in [
        (["--at", "tomorrow"], "--at is not an ISO 8601 time"),
        (["--in", "-5"], "--in must be 0 to"),
        (["--in", "1e9"], "--in must be 0 to"),
        (["--in", "5", "--at", "2026-01-01T00:00:00"], "give --at or --in, not both"),
    ]:
        bad = cli("jobs", "enqueue", "acme_echo", "--business", str(business), "--payload",
                  '{"message": "x"}', *args)  # fmt: skip
        assert bad.returncode == 1 and msg in bad.stderr and "Traceback" not in bad.stderr, args


# -- schedules --------------------------------------------------------------------------------


def test_every_occurrence_fires_once_across_three_workers_and_a_killed_leader(
    runtime, sched_env, start_worker
):
    bs = businesses(runtime, 3)
    schedules.add(runtime, "every-second", cron="* * * * * *", job_type="acme_echo",
                  payload={"message": "tick"}, business_id=bs[0])  # fmt: skip
    schedules.add(runtime, "per-business", cron="* * * * * *", job_type="acme_echo",
                  payload={"message": "each"}, per_business=True)  # fmt: skip
    workers = [start_worker() for _ in range(3)]
    for w in workers:
        w.wait_for_log("SCHEDULER STARTED", 60)
    t0 = datetime.now(UTC)
    time.sleep(10)
    leader = runs(runtime, "every-second")[-1][2]
    (victim,) = [w for w in workers if f".{w.pid}." in leader]  # prosaas.<host>.<pid>.<tag>
    victim.signal(signal.SIGKILL)
    killed_at = datetime.now(UTC)
    time.sleep(10)
    t1 = datetime.now(UTC)
    got = runs(runtime, "every-second")
    window = [o for o, _, _ in got if t0 + timedelta(seconds=1) <= o <= t1 - timedelta(seconds=2)]
    assert len(window) == len(set(window)), "an occurrence fired twice"
    expected = (window[-1] - window[0]).total_seconds() + 1
    assert len(window) == expected, f"missed occurrences: {len(window)} of {expected}"
    after = [(o, by) for o, _, by in got if o > killed_at + timedelta(seconds=1)]
    assert after and all(by != leader for _, by in after)  # another worker took over
    first_after = min(o for o, _ in after)
    assert (first_after - killed_at).total_seconds() <= 3
    per = runs(runtime, "per-business")
    by_occurrence: dict[datetime, list[int]] = {}
    for o, b, _ in per:
        by_occurrence.setdefault(o, []).append(b)
    assert by_occurrence and all(sorted(v) == sorted(bs) for v in by_occurrence.values())
    with runtime.engine.connect() as conn:
        jobs = conn.execute(
            text("SELECT count(*) FROM background_jobs WHERE payload->>'message' = 'each'")
        ).scalar_one()
    assert jobs == len(per)  # one job per business per occurrence


@pytest.mark.slow
def test_catch_up_policies_after_30_seconds_down(runtime, sched_env, start_worker):
    (b,) = businesses(runtime, 1)
    for policy in ("skip", "once", "all"):
        schedules.add(runtime, f"catch-{policy}", cron="* * * * * *", job_type="acme_echo",
                      payload={"message": policy}, business_id=b, catch_up=policy)  # fmt: skip
    w = start_worker()
    w.wait_for_log("SCHEDULE FIRED catch-all", 60)
    w.signal(signal.SIGKILL)
    w.wait()
    down_from = datetime.now(UTC)
    time.sleep(30)
    start_worker().wait_for_log("SCHEDULE FIRED catch-skip", 60)
    time.sleep(2)
    with runtime.engine.connect() as conn:  # when the restarted worker's first tick fired
        back = conn.execute(
            text("SELECT min(fired_at) FROM prosaas_schedule_runs WHERE occurrence_at > :t"),
            {"t": down_from},
        ).scalar_one()
    grace = timedelta(seconds=2)  # PROSAAS_SCHEDULE_GRACE: older than this at that tick: missed
    missed = {
        p: [o for o, _, _ in runs(runtime, f"catch-{p}") if down_from < o < back - grace]
        for p in ("skip", "once", "all")
    }
    assert missed["skip"] == []
    assert len(missed["once"]) == 1
    assert len(missed["all"]) >= 27  # each missed second (the cap, 100, is not reached)
    for p in ("skip", "once", "all"):
        occ = [o for o, _, _ in runs(runtime, f"catch-{p}")]
        assert len(occ) == len(set(occ))


def test_schedules_cli_and_doctor_never_silently_off(runtime, sched_env, cli):
    (b,) = businesses(runtime, 1)
    added = cli("schedules", "add", "nightly", "--cron", "* * * * * *", "--job-type",
                "acme_echo", "--payload", '{"message": "n"}', "--business", str(b),
                "--json", check=True)  # fmt: skip
    row = json.loads(added.stdout)
    assert row["name"] == "nightly" and row["business_id"] == b and row["problem"] is None
    time.sleep(3.5)  # no worker: the occurrences fall due and nobody fires them
    doctor = cli("doctor", extra_env={"ENABLE_SCHEDULERS": "1"})
    assert doctor.returncode == 1
    assert f"PROBLEM schedule 'nightly' (business {b}): occurrence " in doctor.stdout
    assert "is overdue: is a worker running?" in doctor.stdout
    assert "ENABLE_SCHEDULERS is set but does nothing" in doctor.stdout
    listed = cli("schedules", "list", check=True).stdout
    assert "nightly" in listed and "PROBLEM: occurrence" in listed
    assert cli("schedules", "pause", "nightly", check=True).returncode == 0
    paused = [s for s in json.loads(cli("schedules", "list", "--json").stdout)
              if s["name"] == "nightly"]  # fmt: skip
    assert paused[0]["paused"] is True and paused[0]["problem"] is None
    assert cli("schedules", "resume", "nightly").returncode == 0
    for args, msg in [
        (["add", "x", "--cron", "bogus", "--job-type", "acme_echo", "--business", str(b)],
         "invalid cron expression 'bogus'"),
        (["add", "x", "--cron", "* * * * *", "--job-type", "nope", "--business", str(b)], "nope"),
        (["add", "x", "--cron", "* * * * *", "--job-type", "acme_echo", "--business", str(b),
          "--timezone", "Nowhere/City"], "unknown time zone"),
        (["add", "x", "--cron", "* * * * *", "--job-type", "acme_echo"],
         "give --business ID or --per-business"),
        (["add", "nightly", "--cron", "* * * * *", "--job-type", "acme_echo", "--business",
          str(b), "--payload", '{"message": "n"}'], "schedule 'nightly' exists"),
        (["add", "y", "--cron", "* * * * *", "--job-type", "acme_echo", "--business", str(b),
          "--payload", "{}"], "invalid payload: message"),
        (["remove", "acme-new-year"], "is a plugin's: pause it instead"),
        (["pause", "nope"], "schedule 'nope' not found"),
    ]:  # fmt: skip
        res = cli("schedules", *args)
        assert res.returncode == 1, args
        assert msg in res.stderr and "Traceback" not in res.stderr, (args, res.stderr)
    assert cli("schedules", "remove", "nightly").returncode == 0
    assert all(
        s["name"] != "nightly" for s in json.loads(cli("schedules", "list", "--json").stdout)
    )


def test_worker_warns_that_enable_schedulers_does_nothing(runtime, start_worker):
    w = start_worker("--burst", extra_env={"ENABLE_SCHEDULERS": "0"})
    assert w.wait(60) == 0
    assert "ENABLE_SCHEDULERS is set but prosaas does not read it" in w.log()
