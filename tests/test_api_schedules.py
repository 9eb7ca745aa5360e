"""``/api/schedules``: a business's own schedules over HTTP."""

from __future__ import annotations

import time

from prosaas_core.api.app import create_app
from prosaas_core.jobs.scheduler import tick
from prosaas_core.testing import bearer, business_with_token


def test_a_business_manages_its_own_schedules(runtime):
    client = create_app(runtime=runtime).test_client()
    a_id, a_tok = business_with_token(runtime, "A")
    ha = bearer(a_tok)
    body = {
        "name": "daily",
        "cron": "0 3 * * *",
        "job_type": "acme_echo",
        "payload": {"message": "hi"},
        "timezone": "Europe/London",
        "catch_up": "once",
    }
    made = client.post("/api/schedules", json=body, headers=ha)
    assert made.status_code == 201, made.get_json()
    row = made.get_json()
    assert (row["business_id"], row["source"], row["per_business"]) == (a_id, "business", False)
    assert row["next_occurrence"] and row["last_occurrence"] is None and row["problem"] is None
    again = client.post("/api/schedules", json=body, headers=ha)
    assert again.status_code == 409 and set(again.get_json()) == {"error", "details"}
    listed = client.get("/api/schedules", headers=ha).get_json()["items"]
    assert [s["name"] for s in listed] == ["daily"]
    assert client.get(f"/api/schedules/{row['id']}", headers=ha).get_json()["cron"] == "0 3 * * *"
    assert client.delete(f"/api/schedules/{row['id']}", headers=ha).status_code == 204
    assert client.get(f"/api/schedules/{row['id']}", headers=ha).status_code == 404


def test_bad_schedules_are_refused_with_json_errors(runtime):
    client = create_app(runtime=runtime).test_client()
    _, tok = business_with_token(runtime, "A")
    h = bearer(tok)
    good = {"name": "x", "cron": "* * * * *", "job_type": "acme_echo", "payload": {"message": "m"}}
    for change, error in [
        ({"cron": "every day"}, "Invalid time"),
        ({"timezone": "Mars/Base"}, "Invalid time"),
        ({"job_type": "nope"}, "Unknown job type"),
        ({"payload": {}}, "Invalid payload"),
        ({"name": "Bad Name"}, "Invalid payload"),
        ({"catch_up": "maybe"}, "Invalid payload"),
        ({"jitter": 1e9}, "Invalid payload"),
        ({"per_business": True}, "Invalid payload"),  # a business can't fire for others
    ]:
        res = client.post("/api/schedules", json={**good, **change}, headers=h)
        assert res.status_code == 400, (change, res.get_json())
        assert res.get_json()["error"] == error, (change, res.get_json())
        assert len(res.get_data()) < 4096


def test_a_business_schedule_fires_for_that_business_only(runtime):
    client = create_app(runtime=runtime).test_client()
    a_id, a_tok = business_with_token(runtime, "A")
    business_with_token(runtime, "B")
    client.post("/api/schedules", json={"name": "often", "cron": "* * * * * *",
                "job_type": "acme_echo", "payload": {"message": "a"}},
                headers=bearer(a_tok))  # fmt: skip
    time.sleep(1.2)
    fired = tick(runtime, "test")
    assert fired.occurrences >= 1
    assert {b for _, b, _, _ in fired.jobs} == {a_id}


def test_post_jobs_takes_run_at_or_delay(runtime):
    from datetime import UTC, datetime, timedelta

    client = create_app(runtime=runtime).test_client()
    _, tok = business_with_token(runtime, "A")
    h = bearer(tok)
    body = {"job_type": "acme_echo", "payload": {"message": "later"}}
    later = client.post("/api/jobs", json={**body, "delay": 120}, headers=h)
    assert later.status_code == 202, later.get_json()
    job = client.get(f"/api/jobs/{later.get_json()['id']}", headers=h).get_json()
    due = datetime.fromisoformat(job["run_after"])
    assert timedelta(seconds=100) < due - datetime.now(UTC) <= timedelta(seconds=120)
    at = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    sched = client.post("/api/jobs", json={**body, "run_at": at}, headers=h).get_json()
    got = client.get(f"/api/jobs/{sched['id']}", headers=h).get_json()
    assert datetime.fromisoformat(got["run_after"]) == datetime.fromisoformat(at)
    for extra, error in [
        ({"delay": 5, "run_at": at}, "Invalid time"),
        ({"run_at": "2026-12-24T18:00:00"}, "Invalid payload"),  # no offset: ambiguous
        ({"delay": -1}, "Invalid payload"),
        ({"run_at": "9999-12-31T23:00:00-05:00"}, "Invalid payload"),  # past 9999 in UTC
        ({"delay": 1e9}, "Invalid payload"),
    ]:
        res = client.post("/api/jobs", json={**body, **extra}, headers=h)
        assert res.status_code == 400 and res.get_json()["error"] == error, (extra, res.json)
