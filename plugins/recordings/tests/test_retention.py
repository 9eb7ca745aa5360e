"""The nightly retention schedule: the recordings plugin's per-business schedule and its job."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prosaas_recordings.tables import calls
from prosaas_recordings.testing import call_sid, make_call
from sqlalchemy import text, update

from prosaas_core import enqueue
from prosaas_core.models import Business
from prosaas_core.testing import get_job, list_jobs, wait_until


def _recording(runtime, recordings_dir, business_id: int, n: int, age_days: float):
    sid = call_sid(n)
    make_call(runtime, business_id, sid)
    path = recordings_dir / str(business_id) / f"{sid}.mp3"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"ID3 audio")
    with runtime.session() as s:
        s.execute(
            update(calls)
            .where(calls.c.call_sid == sid)
            .values(recording_path=str(path), recording_status="completed",
                    created_at=datetime.now(UTC) - timedelta(days=age_days))
        )  # fmt: skip
    return path


def test_retention_job_deletes_only_old_files_of_its_business(
    runtime, business, recordings_dir, start_worker
):
    with runtime.session() as s:
        other = Business(name="other")
        s.add(other)
        s.flush()
        other_id = other.id
    old = _recording(runtime, recordings_dir, business, 1, age_days=40)
    new = _recording(runtime, recordings_dir, business, 2, age_days=1)
    others = _recording(runtime, recordings_dir, other_id, 3, age_days=40)
    job = enqueue(runtime, "recordings_retention", business, {"days": 30})
    w = start_worker("--burst")
    assert w.wait(90) == 0, w.log()
    done = get_job(runtime, job.id)
    assert done["status"] == "succeeded" and done["result"] == {"deleted": 1, "days": 30}
    assert not old.exists() and new.exists() and others.exists()
    with runtime.engine.connect() as conn:
        rows = dict(conn.execute(text("SELECT call_sid, recording_status FROM calls")).all())
    assert rows == {call_sid(1): "deleted", call_sid(2): "completed", call_sid(3): "completed"}


def test_nightly_schedule_fires_once_per_business_after_a_missed_night(
    runtime, business, start_worker
):
    with runtime.session() as s:
        s.add(Business(name="second"))
    # the scheduler last dealt with the schedule two nights ago: one night was missed
    with runtime.session() as s:
        s.execute(
            text(
                "INSERT INTO prosaas_schedules (name, source, fired_through) "
                "VALUES ('recordings-retention', 'plugin', :t)"
            ),
            {"t": datetime.now(UTC) - timedelta(days=2)},
        )
    start_worker()
    wait_until(
        lambda: len(list_jobs(runtime, job_type="recordings_retention")) == 2, 60,
        "a retention job per business",
    )  # fmt: skip
    jobs = list_jobs(runtime, job_type="recordings_retention")
    assert sorted(j["business_id"] for j in jobs) == sorted([business, business + 1])
    with runtime.engine.connect() as conn:
        occurrences = conn.execute(
            text(
                "SELECT count(DISTINCT r.occurrence_at) FROM prosaas_schedule_runs r "
                "JOIN prosaas_schedules s ON s.id = r.schedule_id "
                "WHERE s.name = 'recordings-retention'"
            )
        ).scalar_one()  # other schedules (the core's housekeeping) record runs too
    assert occurrences == 1  # catch_up="once": the latest missed night only
