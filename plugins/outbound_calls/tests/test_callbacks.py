"""Status callbacks through the app: signatures, order, replays, stale attempts, retries, and
the live-call slot each final status frees (real PostgreSQL and Redis; targets set up in SQL as
the dialer leaves them after a claim)."""

from __future__ import annotations

import pytest
from prosaas_outbound_calls.testing import CALLER, TEST_AUTH_TOKEN, phone, sign
from sqlalchemy import text

from prosaas_core.limits import Limits

PATH = "/webhooks/twilio/outbound-call-status"
SID = "CA" + "a" * 32


@pytest.fixture
def slots(runtime):
    return Limits.on(runtime.redis).slots


@pytest.fixture
def claimed(runtime, client, acme, slots, env):
    """A campaign with one target claimed for attempt `tok1`, holding a live-call slot."""
    business_id, auth = acme
    resp = client.post(
        "/api/outbound-calls",
        json={"lead_ids": [1], "caller_id": CALLER, "retry": {"attempts": 2, "spacing_seconds": 0}},
        headers=auth,
    )
    cid = resp.get_json()["campaign_id"]
    slot = slots.acquire(f"outbound_calls:{business_id}", 5, 60)
    with runtime.session() as s:
        s.execute(text("UPDATE outbound_campaigns SET prepared = true WHERE id = :c"), {"c": cid})
        tid = s.execute(
            text(
                "INSERT INTO outbound_targets (campaign_id, business_id, phone, status, attempts,"
                " attempt_token, slot_token, claimed_at) VALUES (:c, :b, :p, 'dialing', 1,"
                " 'aaaa1111', :slot, now()) RETURNING id"
            ),
            {"c": cid, "b": business_id, "p": phone(1), "slot": slot.token},
        ).scalar_one()
    return {"business_id": business_id, "campaign": cid, "target": tid, "slot": slot}


def post(client, env, target, status, *, token="aaaa1111", sid=SID, signature=None, **extra):
    query = f"target={target}&attempt={token}"
    params = {"CallSid": sid, "CallStatus": status, "AccountSid": "AC1", **extra}
    url = f"{env['TWILIO_WEBHOOK_BASE_URL']}{PATH}?{query}"
    sig = sign(TEST_AUTH_TOKEN, url, params) if signature is None else signature
    headers = {"X-Twilio-Signature": sig} if sig else {}
    return client.post(f"{PATH}?{query}", data=params, headers=headers)


def target(runtime, tid) -> dict:
    with runtime.session() as s:
        return dict(
            s.execute(text("SELECT * FROM outbound_targets WHERE id = :t"), {"t": tid})
            .mappings()
            .one()
        )


def call_status(runtime, sid=SID):
    with runtime.session() as s:
        return s.execute(
            text("SELECT status, direction FROM calls WHERE call_sid = :s"), {"s": sid}
        ).first()


def test_forged_or_missing_signatures_are_403_and_change_nothing(runtime, client, env, claimed):
    tid = claimed["target"]
    assert post(client, env, tid, "completed", signature="").status_code == 403
    assert post(client, env, tid, "completed", signature="bm90IGl0").status_code == 403
    # a signature for another URL (another target) does not carry over
    other = sign(TEST_AUTH_TOKEN, f"{env['TWILIO_WEBHOOK_BASE_URL']}{PATH}?target=999", {})
    resp = post(client, env, tid, "completed", signature=other)
    assert resp.status_code == 403 and resp.get_json()["error"] == "Forbidden"
    t = target(runtime, tid)
    assert (t["status"], t["call_sid"]) == ("dialing", None)
    assert call_status(runtime) is None


def test_statuses_apply_in_order_replays_and_late_ones_change_nothing(
    runtime, client, env, claimed, slots
):
    tid, key = claimed["target"], claimed["slot"].key
    other = slots.acquire(key, 5, 60)  # another live call of the business
    assert slots.active(key) == 2
    for status in ("initiated", "ringing", "in-progress"):
        assert post(client, env, tid, status).get_json() == {"status": "applied"}
    t = target(runtime, tid)
    assert (t["status"], t["call_sid"], t["call_status"]) == ("live", SID, "in-progress")
    resp = post(client, env, tid, "completed", CallDuration="12", AnsweredBy="human")
    assert resp.get_json() == {"status": "applied"}
    assert slots.active(key) == 1  # this call's slot, and only it
    for replay in ("completed", "ringing", "in-progress", "busy"):
        assert post(client, env, tid, replay).get_json() == {"status": "duplicate"}, replay
    t = target(runtime, tid)
    assert (t["status"], t["call_status"], t["duration"], t["answered_by"]) == (
        "completed",
        "completed",
        12,
        "human",
    )
    assert tuple(call_status(runtime)) == ("completed", "outbound")
    assert slots.active(key) == 1 and slots.release(other)[0]
    summary = client.get(
        f"/api/outbound-calls/{claimed['campaign']}", headers={"Authorization": "x"}
    )
    assert summary.status_code == 401


def test_completed_before_ringing_keeps_completed(runtime, client, env, claimed):
    tid = claimed["target"]
    assert post(client, env, tid, "completed").get_json() == {"status": "applied"}
    assert post(client, env, tid, "ringing").get_json() == {"status": "duplicate"}
    assert target(runtime, tid)["status"] == "completed"
    assert tuple(call_status(runtime)) == ("completed", "outbound")
    with runtime.session() as s:
        state = s.execute(
            text("SELECT state FROM outbound_campaigns WHERE id = :c"), {"c": claimed["campaign"]}
        ).scalar_one()
    assert state == "completed"  # its only target is done


def test_a_late_ringing_never_overwrites_in_progress(runtime, client, env, claimed):
    tid = claimed["target"]
    assert post(client, env, tid, "in-progress").get_json() == {"status": "applied"}
    for late in ("ringing", "initiated", "in-progress"):
        assert post(client, env, tid, late).get_json() == {"status": "duplicate"}, late
    t = target(runtime, tid)
    assert (t["status"], t["call_status"]) == ("live", "in-progress")
    assert tuple(call_status(runtime)) == ("in-progress", "outbound")


def test_an_older_attempt_or_another_sid_is_stale(runtime, client, env, claimed):
    tid = claimed["target"]
    assert post(client, env, tid, "ringing").get_json() == {"status": "applied"}
    stale = post(client, env, tid, "completed", token="bbbb2222")
    assert stale.get_json() == {"status": "stale"}
    other = post(client, env, tid, "completed", sid="CA" + "b" * 32)
    assert other.get_json() == {"status": "stale"}
    assert target(runtime, tid)["status"] == "live"


def test_busy_is_retried_per_the_policy_then_final(runtime, client, env, claimed, slots):
    tid, key = claimed["target"], claimed["slot"].key
    assert post(client, env, tid, "busy").get_json() == {"status": "applied"}
    t = target(runtime, tid)
    assert (t["status"], t["attempts"], t["slot_token"]) == ("pending", 1, None)
    assert slots.active(key) == 0
    # the dialer's next claim: a new attempt token and a new sid
    with runtime.session() as s:
        s.execute(
            text(
                "UPDATE outbound_targets SET status = 'dialing', attempt_token = 'cccc3333',"
                " attempts = 2, call_sid = NULL, call_status = NULL WHERE id = :t"
            ),
            {"t": tid},
        )
    assert post(client, env, tid, "busy").get_json() == {"status": "stale"}  # attempt 1's
    sid2 = "CA" + "c" * 32
    assert post(client, env, tid, "busy", token="cccc3333", sid=sid2).get_json() == {
        "status": "applied"
    }
    t = target(runtime, tid)
    assert (t["status"], t["attempts"], t["call_sid"]) == ("busy", 2, sid2)


def test_a_call_given_back_by_the_sweep_is_adopted_not_placed_again(
    runtime, client, env, claimed, slots
):
    tid, slot = claimed["target"], claimed["slot"]
    with runtime.session() as s:  # as the sweep leaves it when the provider listed nothing
        s.execute(
            text(
                "UPDATE outbound_targets SET status = 'pending', attempts = 0, slot_token = NULL,"
                " claimed_at = NULL WHERE id = :t"
            ),
            {"t": tid},
        )
    slots.release(slot)
    assert post(client, env, tid, "ringing").get_json() == {"status": "applied"}
    t = target(runtime, tid)
    assert (t["status"], t["attempts"], t["call_sid"]) == ("live", 1, SID)
    assert slots.active(slot.key) == 1  # the live call holds a slot again
    assert post(client, env, tid, "completed").get_json() == {"status": "applied"}
    assert target(runtime, tid)["status"] == "completed" and slots.active(slot.key) == 0


@pytest.mark.parametrize(
    "field, value",
    [("CallSid", "nope"), ("CallStatus", "exploded"), ("CallDuration", "-1")],
)
def test_malformed_callbacks_are_400(client, env, claimed, field, value):
    params = {"CallSid": SID, "CallStatus": "ringing", field: value}
    query = f"target={claimed['target']}&attempt=aaaa1111"
    url = f"{env['TWILIO_WEBHOOK_BASE_URL']}{PATH}?{query}"
    resp = client.post(
        f"{PATH}?{query}",
        data=params,
        headers={"X-Twilio-Signature": sign(TEST_AUTH_TOKEN, url, params)},
    )
    assert resp.status_code == 400 and resp.get_json()["error"] == "Invalid callback"
