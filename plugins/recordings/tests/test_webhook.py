"""The Twilio recording callback: signatures, idempotency, business resolution, allowed hosts."""

from __future__ import annotations

import pytest
from prosaas_recordings.tables import calls, recording_tasks
from prosaas_recordings.testing import (
    TEST_ACCOUNT_SID,
    TEST_AUTH_TOKEN,
    call_sid,
    make_call,
    recording_sid,
    sign,
)
from sqlalchemy import func, select

from prosaas_core import Runtime, Settings, create_app
from prosaas_core.api.webhooks import WebhookConfigError

WEBHOOK = "/webhooks/twilio/recording"


def tasks(runtime) -> list:
    with runtime.session() as s:
        return list(s.execute(select(recording_tasks).order_by(recording_tasks.c.id)))


def call_row(runtime, sid):
    with runtime.session() as s:
        return s.execute(select(calls).where(calls.c.call_sid == sid)).first()


def test_signed_callback_queues_one_durable_task(runtime, business, post_callback, stub):
    make_call(runtime, business, call_sid(1))
    resp = post_callback(business, call_sid(1), recording_sid(1), duration="17")
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["status"] == "queued"
    [task] = tasks(runtime)
    assert (task.business_id, task.call_sid, task.recording_sid) == (
        business,
        call_sid(1),
        recording_sid(1),
    )
    assert task.status == "queued" and task.recording_url == stub.url(business, recording_sid(1))
    row = call_row(runtime, call_sid(1))
    assert row.recording_status == "queued" and row.recording_duration == 17

    again = post_callback(business, call_sid(1), recording_sid(1), duration="17")
    assert again.status_code == 200 and again.get_json()["status"] == "duplicate"
    assert len(tasks(runtime)) == 1


def test_missing_forged_or_tampered_signature_is_403_and_creates_nothing(
    runtime, business, post_callback, client, stub
):
    make_call(runtime, business, call_sid(2))
    missing = post_callback(business, call_sid(2), recording_sid(2), signature="")
    forged_sig = sign("not-the-token", "http://localhost" + WEBHOOK, {"CallSid": call_sid(2)})
    forged = post_callback(business, call_sid(2), recording_sid(2), signature=forged_sig)
    assert missing.status_code == 403 and forged.status_code == 403
    assert missing.get_json()["error"] == "Forbidden"

    # Signed for one recording URL, sent with another: the signature covers every parameter.
    params = {
        "AccountSid": TEST_ACCOUNT_SID,
        "CallSid": call_sid(2),
        "RecordingSid": recording_sid(2),
        "RecordingUrl": stub.url(business, recording_sid(2)),
        "RecordingStatus": "completed",
    }
    good = sign(TEST_AUTH_TOKEN, "http://localhost" + WEBHOOK, params)
    tampered = {**params, "RecordingUrl": stub.url(business, "RE" + "f" * 32)}
    resp = client.post(WEBHOOK, data=tampered, headers={"X-Twilio-Signature": good})
    assert resp.status_code == 403
    assert tasks(runtime) == []
    assert call_row(runtime, call_sid(2)).recording_status is None


def test_recording_url_outside_allowed_hosts_is_refused(runtime, business, post_callback):
    make_call(runtime, business, call_sid(3))
    for url in (
        "https://evil.example/2010-04-01/Accounts/AC1/Recordings/RE1",
        "http://169.254.169.254/latest/meta-data",
        "file:///etc/passwd",
    ):
        resp = post_callback(business, call_sid(3), recording_sid(3), url=url)
        assert resp.status_code == 400, url
        assert resp.get_json()["error"] == "Recording URL not allowed"
    assert tasks(runtime) == []


def test_unknown_call_is_tied_by_the_signed_business_id_or_refused(
    runtime, business, post_callback
):
    refused = post_callback(business, call_sid(4), recording_sid(4))
    assert refused.status_code == 404 and refused.get_json()["error"] == "Unknown call"
    no_such = post_callback(business, call_sid(4), recording_sid(4), query="business_id=999999")
    assert no_such.status_code == 404
    assert tasks(runtime) == [] and call_row(runtime, call_sid(4)) is None

    ok = post_callback(business, call_sid(4), recording_sid(4), query=f"business_id={business}")
    assert ok.status_code == 200
    assert call_row(runtime, call_sid(4)).business_id == business
    [task] = tasks(runtime)
    assert task.business_id == business


def test_known_call_keeps_its_business_whatever_the_url_says(runtime, business, post_callback):
    from prosaas_core.models import Business

    with runtime.session() as s:
        s.add(b := Business(name="Other"))
        s.flush()
        other = b.id
    make_call(runtime, business, call_sid(5))
    resp = post_callback(business, call_sid(5), recording_sid(5), query=f"business_id={other}")
    assert resp.status_code == 200
    [task] = tasks(runtime)
    assert task.business_id == business


def test_recording_not_completed_is_noted_without_a_download(runtime, business, post_callback):
    make_call(runtime, business, call_sid(6))
    resp = post_callback(business, call_sid(6), recording_sid(6), status="absent", url="")
    assert resp.status_code == 200 and resp.get_json()["status"] == "ignored"
    assert tasks(runtime) == []
    assert call_row(runtime, call_sid(6)).recording_status == "absent"


def test_missing_fields_are_400(runtime, business, client):
    params = {"CallSid": call_sid(7), "RecordingStatus": "completed"}
    sig = sign(TEST_AUTH_TOKEN, "http://localhost" + WEBHOOK, params)
    resp = client.post(WEBHOOK, data=params, headers={"X-Twilio-Signature": sig})
    assert resp.status_code == 400
    assert resp.get_json() == {"error": "Invalid callback", "details": "RecordingSid is required"}


def test_public_url_behind_a_proxy(runtime, env, business, stub):
    """Twilio signs the public URL; the app behind the proxy sees another host and scheme."""
    public = "https://calls.example.com"
    rt = Runtime(Settings.from_env({**env, "TWILIO_WEBHOOK_BASE_URL": public}), pm=runtime.pm)
    client = create_app(runtime=rt).test_client()
    make_call(runtime, business, call_sid(8))
    params = {
        "AccountSid": TEST_ACCOUNT_SID,
        "CallSid": call_sid(8),
        "RecordingSid": recording_sid(8),
        "RecordingUrl": stub.url(business, recording_sid(8)),
        "RecordingStatus": "completed",
    }
    path = WEBHOOK + "?source=voice"
    internal = sign(TEST_AUTH_TOKEN, "http://localhost" + path, params)
    assert (
        client.post(path, data=params, headers={"X-Twilio-Signature": internal}).status_code == 403
    )
    public_sig = sign(TEST_AUTH_TOKEN, public + path, params)
    resp = client.post(path, data=params, headers={"X-Twilio-Signature": public_sig})
    assert resp.status_code == 200
    rt.close()
    with runtime.session() as s:
        assert s.execute(select(func.count()).select_from(recording_tasks)).scalar_one() == 1


def test_no_auth_token_configured_refuses_everything(runtime, env, business, stub):
    bare = {k: v for k, v in env.items() if k != "TWILIO_AUTH_TOKEN"}
    rt = Runtime(Settings.from_env(bare), pm=runtime.pm)
    resp = (
        create_app(runtime=rt)
        .test_client()
        .post(WEBHOOK, data={"CallSid": call_sid(9)}, headers={"X-Twilio-Signature": "x"})
    )
    assert resp.status_code == 503
    rt.close()


def _signed(client, params, path=WEBHOOK):
    sig = sign(TEST_AUTH_TOKEN, "http://localhost" + path, params)
    return client.post(path, data=params, headers={"X-Twilio-Signature": sig})


def test_sids_must_have_twilios_shapes(runtime, business, client, stub):
    make_call(runtime, business, call_sid(10))
    good = {"CallSid": call_sid(10), "RecordingSid": recording_sid(10)}
    for bad in (
        {"CallSid": "CA123"},
        {"CallSid": "XY" + "0" * 32},
        {"CallSid": call_sid(10) + "0"},
        {"RecordingSid": "RE" + "g" * 32},
        {"RecordingSid": "CA" + "0" * 32},
        {"RecordingSid": "RE" + "0" * 31},
    ):
        params = {
            **good,
            "RecordingUrl": stub.url(business, recording_sid(10)),
            "RecordingStatus": "completed",
            **bad,
        }
        resp = _signed(client, params)
        assert resp.status_code == 400, bad
        assert resp.get_json()["error"] == "Invalid callback"
    assert tasks(runtime) == []


def test_recording_status_is_required_and_known(runtime, business, client, stub):
    make_call(runtime, business, call_sid(11))
    params = {
        "CallSid": call_sid(11),
        "RecordingSid": recording_sid(11),
        "RecordingUrl": stub.url(business, recording_sid(11)),
    }
    missing = _signed(client, params)
    assert missing.status_code == 400
    assert missing.get_json()["details"] == "RecordingStatus is required"
    assert _signed(client, {**params, "RecordingStatus": "whatever"}).status_code == 400
    assert tasks(runtime) == []


def test_duplicate_writes_nothing_not_even_a_call(runtime, business, post_callback):
    make_call(runtime, business, call_sid(12))
    assert post_callback(business, call_sid(12), recording_sid(12)).get_json()["status"] == "queued"
    # the same recording again, now naming an unknown call and a business: still a duplicate,
    # answered before the unknown call would be created
    again = post_callback(
        business, call_sid(13), recording_sid(12), query=f"business_id={business}"
    )
    assert again.status_code == 200 and again.get_json()["status"] == "duplicate"
    assert call_row(runtime, call_sid(13)) is None
    assert len(tasks(runtime)) == 1


def test_no_base_url_in_production_refuses_to_start(env):
    prod = {k: v for k, v in env.items() if k != "TWILIO_WEBHOOK_TRUST_HOST"}
    # the other Twilio webhooks refuse too: leave them out to see this plugin's own check
    prod["PROSAAS_DISABLE_PLUGINS"] = "broadcast,outbound_calls"
    with pytest.raises(WebhookConfigError) as err:
        create_app(prod)
    message = str(err.value)
    assert "plugin 'recordings'" in message and WEBHOOK in message
    assert "TWILIO_WEBHOOK_BASE_URL" in message and "TWILIO_WEBHOOK_TRUST_HOST=1" in message
    assert "\n" not in message
