"""Broadcasts sent by real `prosaas worker` processes to the local provider server: skips,
retries, permanent failures, 429 back-off for the whole business, cancel, Twilio
reconciliation after a SIGKILL, scheduled broadcasts."""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime, timedelta

import pytest
from prosaas_broadcast.testing import FROM, add_leads, job, many_leads, phone, wait_broadcast
from sqlalchemy import text

from prosaas_core.testing import wait_until

pytestmark = pytest.mark.slow


def _recipients(runtime, bid: int) -> dict[int, dict]:
    with runtime.session() as s:
        rows = s.execute(
            text("SELECT * FROM broadcast_recipients WHERE broadcast_id = :b"), {"b": bid}
        )
        return {r.lead_id: dict(r._mapping) for r in rows}


def _worker(start_worker, **extra):
    return start_worker("--queues", "messaging", extra_env={k: str(v) for k, v in extra.items()})


def test_skips_retries_and_permanent_failures_end_in_a_succeeded_job(
    runtime, client, auth, business, fake, start_worker
):
    good = [{"name": f"L{i}", "phone": phone(i)} for i in range(10)]
    ids = add_leads(
        runtime,
        business,
        [*good, {"name": "dup", "phone": phone(0)}, {"name": "bad", "phone": "555"}],
    )
    fake.script[phone(3)] = [503, 502]  # two 5xx, then accepted
    fake.reject[phone(4)] = (400, 21211)  # permanent
    resp = client.post(
        "/api/broadcasts", json={"all": True, "template": "Hello {name}"}, headers=auth
    )
    assert resp.status_code == 202, resp.get_json()
    bid, job_id = resp.get_json()["id"], resp.get_json()["job"]["id"]
    _worker(start_worker)
    b = wait_broadcast(client, auth, bid)
    assert b["status"] == "succeeded"
    assert b["counts"] == {
        "pending": 0,
        "sending": 0,
        "sent": 9,
        "delivered": 0,
        "failed": 1,
        "skipped": 2,
    }
    assert b["skipped"] == {"duplicate": 1, "invalid_phone": 1}
    # exactly one accepted message per sendable recipient, with its key and rendered body
    assert sorted(k for _, k, _, _ in fake.accepted) == sorted(
        f"{bid}:{ids[i]}" for i in range(10) if i != 4
    )
    assert not fake.repeats
    assert {body for *_, body in fake.accepted} == {f"Hello L{i}" for i in range(10) if i != 4}
    rec = _recipients(runtime, bid)
    assert rec[ids[3]]["attempts"] == 3 and rec[ids[3]]["status"] == "sent"
    assert rec[ids[4]]["status"] == "failed" and "400" in rec[ids[4]]["error"]
    j = wait_until(lambda: (j := job(runtime, job_id))["status"] != "running" and j, 10)
    assert j["status"] == "succeeded", j
    assert j["result"]["counts"]["failed"] == 1 and j["result"]["counts"]["sent"] == 9


def test_a_429_backs_off_every_sender_of_the_business(
    runtime, client, auth, business, fake, start_worker
):
    many_leads(runtime, business, 40)
    fake.throttle, fake.retry_after = 1, 1.5
    fake.reject[phone(7)] = (400, 21211)
    w = dict(BROADCAST_PART_SIZE=10, BROADCAST_MAX_PARTS=4, BROADCAST_SENDER_THREADS=2)
    _worker(start_worker, **w), _worker(start_worker, **w)
    resp = client.post(
        "/api/broadcasts",
        json={"all": True, "template": "Hi {name}", "provider": "twilio"},
        headers=auth,
    )
    bid = resp.get_json()["id"]
    b = wait_broadcast(client, auth, bid)
    assert b["counts"]["sent"] == 39 and b["counts"]["failed"] == 1
    [t429] = [t for t, status in fake.requests if status == 429]
    after = [t - t429 for t in fake.accepted_times() if t > t429]
    # the other worker's send already past the gate may land; nothing else before Retry-After
    early = [d for d in after if d < 1.4]
    assert len(after) == 39 and len(early) <= 2 * 2 - 1, early  # 2 workers x 2 threads
    rec = _recipients(runtime, bid)
    failed = [r for r in rec.values() if r["status"] == "failed"]
    assert len(failed) == 1 and "21211" in failed[0]["error"]
    sent = [r for r in rec.values() if r["status"] == "sent"]
    assert all(r["provider_message_id"].startswith("SM") for r in sent)
    # the Twilio messages carry the sender, and a status callback naming their recipient
    by_to = {m["to"]: m for m in fake.twilio_messages}
    for r in sent:
        m = by_to[r["phone"]]
        assert m["from"] == FROM and m["sid"] == r["provider_message_id"]
        assert m["status_callback"].endswith(f"/webhooks/twilio/broadcast-status?r={r['id']}")
    assert all(r["attempts"] == 1 for r in sent)  # the refused (429) attempt does not count


def test_cancel_stops_between_sends_and_skips_the_rest(
    runtime, client, auth, business, fake, start_worker
):
    many_leads(runtime, business, 200)
    _worker(start_worker)
    resp = client.post(
        "/api/broadcasts", json={"all": True, "template": "Hi", "rate": 20}, headers=auth
    )
    bid, job_id = resp.get_json()["id"], resp.get_json()["job"]["id"]
    wait_until(lambda: len(fake.accepted) >= 10, 30, "10 messages")
    resp = client.post(f"/api/broadcasts/{bid}/cancel", headers=auth)
    assert resp.status_code == 202
    b = wait_broadcast(client, auth, bid, timeout=10)
    sent = len(fake.accepted)
    assert b["status"] == "cancelled"
    assert b["counts"]["sent"] == sent < 60
    assert b["skipped"] == {"cancelled": 200 - sent}
    time.sleep(1)
    assert len(fake.accepted) == sent  # nothing after the end
    assert client.post(f"/api/broadcasts/{bid}/cancel", headers=auth).status_code == 409
    wait_until(lambda: job(runtime, job_id)["status"] == "succeeded", 10, "job done")


def test_twilio_recipient_left_sending_by_a_sigkill_is_looked_up_not_resent(
    runtime, client, auth, business, fake, start_worker
):
    ids = many_leads(runtime, business, 3)
    fake.hold[phone(1)] = 30  # Twilio has the message; the answer never comes in time
    w = _worker(
        start_worker,
        BROADCAST_HTTP_TIMEOUT=20,
        BROADCAST_SENDING_STALE_SECONDS=40,
        BROADCAST_SENDER_THREADS=1,
    )
    resp = client.post(
        "/api/broadcasts",
        json={"all": True, "template": "Hi {name}", "provider": "twilio"},
        headers=auth,
    )
    bid = resp.get_json()["id"]
    wait_until(
        lambda: any(m["to"] == phone(1) for m in fake.twilio_messages), 30, "the held message"
    )
    w.signal(signal.SIGKILL)
    w.wait()
    rec = _recipients(runtime, bid)
    assert rec[ids[1]]["status"] == "sending" and rec[ids[2]]["status"] == "pending"
    with runtime.session() as s:  # its check time has come (as after BROADCAST_SENDING_STALE)
        s.execute(
            text("UPDATE broadcast_recipients SET next_attempt_at = now() WHERE id = :i"),
            {"i": rec[ids[1]]["id"]},
        )
    _worker(start_worker)
    b = wait_broadcast(client, auth, bid, timeout=40)
    assert b["counts"]["sent"] == 3
    to = [m["to"] for m in fake.twilio_messages]
    assert sorted(to) == sorted({phone(0), phone(1), phone(2)}), to  # none sent twice
    rec = _recipients(runtime, bid)
    [held] = [m for m in fake.twilio_messages if m["to"] == phone(1)]
    assert rec[ids[1]]["provider_message_id"] == held["sid"]


def test_a_scheduled_broadcast_starts_when_due(runtime, client, auth, business, fake, start_worker):
    many_leads(runtime, business, 2)
    _worker(start_worker)
    at = datetime.now(UTC) + timedelta(seconds=2)
    resp = client.post(
        "/api/broadcasts",
        json={"all": True, "template": "Hi", "scheduled_at": at.isoformat()},
        headers=auth,
    )
    assert resp.status_code == 202 and resp.get_json()["job"] is None
    bid = resp.get_json()["id"]
    assert client.get(f"/api/broadcasts/{bid}", headers=auth).get_json()["status"] == "scheduled"
    b = wait_broadcast(client, auth, bid, timeout=30)
    assert b["status"] == "succeeded" and b["counts"]["sent"] == 2
    assert min(fake.accepted_times()) >= at.timestamp() - 0.05
