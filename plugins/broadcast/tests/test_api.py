"""The broadcast API through the Flask test client (real PostgreSQL and Redis, no worker):
validation, dry-run previews, opt-outs, tenant isolation, signed status callbacks."""

from __future__ import annotations

import pytest
from prosaas_broadcast.testing import (
    AUTH_TOKEN,
    add_leads,
    new_business,
    phone,
    token_for,
    twilio_signature,
)
from sqlalchemy import text


def _jobs(runtime) -> list[tuple]:
    with runtime.session() as s:
        return s.execute(text("SELECT job_type, payload FROM background_jobs ORDER BY id")).all()


def _post(client, auth, **body):
    return client.post(
        "/api/broadcasts", json={"all": True, "template": "Hi {name}", **body}, headers=auth
    )


@pytest.mark.parametrize(
    "body, needle",
    [
        ({"template": "Hi {nme} and {colour}"}, "{nme}, {colour}"),
        ({"template": "Hi {name!r}"}, "format specs"),
        ({"template": "x" * 1601}, "1600"),
        ({"template": ""}, "template"),
        ({"channel": "fax"}, "channel"),
        ({"provider": "carrier-pigeon"}, "unknown provider 'carrier-pigeon'"),
        ({"rate": 5000}, "above this business's 1000/s"),
        ({"rate": -1}, "rate"),
        ({"all": False}, "lead_ids, filter"),
        ({"broadcast_id": 3}, "set by prosaas"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_requests_are_400_naming_the_problem(runtime, client, auth, body, needle):
    resp = _post(client, auth, **body)
    assert resp.status_code == 400, resp.get_json()
    data = resp.get_json()
    assert set(data) == {"error", "details"}
    assert needle in str(data["details"]), data
    assert _jobs(runtime) == []


def test_needs_a_token_and_json(client, auth):
    assert client.post("/api/broadcasts", json={"all": True, "template": "x"}).status_code == 401
    assert client.post("/api/broadcasts", data="x", headers=auth).status_code == 415
    assert client.get("/api/broadcasts").status_code == 401


def test_dry_run_previews_counts_skips_and_samples_and_writes_nothing(
    runtime, client, auth, business
):
    add_leads(
        runtime,
        business,
        [
            {"name": "Ann", "phone": "(415) 200-0001"},
            {"name": "Bob", "phone": phone(2)},
            {"name": "Bob again", "phone": phone(2)},  # duplicate phone
            {"name": "Cy", "phone": "12345"},  # invalid
            {"name": "Di", "phone": None},  # none
            {"name": "Ed", "phone": phone(5), "tags": ["vip", "opted_out"]},
            {"name": "Flo", "phone": phone(6)},  # opted out by number
            {"name": "Gus", "phone": phone(7)},
        ],
    )
    resp = client.post("/api/broadcasts/opt-outs", json={"phones": ["415-200-0006"]}, headers=auth)
    assert resp.status_code == 200 and resp.get_json()["phones"] == [phone(6)]
    resp = _post(client, auth, dry_run=True, template="Hi {name}, call {phone}")
    assert resp.status_code == 200, resp.get_json()
    out = resp.get_json()
    assert out["count"] == 3
    assert out["skipped"] == {"duplicate": 1, "invalid_phone": 1, "no_phone": 1, "opted_out": 2}
    assert [s["body"] for s in out["samples"]] == [
        f"Hi Ann, call {phone(1)}",
        f"Hi Bob, call {phone(2)}",
        f"Hi Gus, call {phone(7)}",
    ]
    assert _jobs(runtime) == []
    assert client.get("/api/broadcasts", headers=auth).get_json()["items"] == []


def test_create_answers_202_with_the_broadcast_and_its_job(runtime, client, auth, business):
    add_leads(runtime, business, [{"name": "Ann", "phone": phone(1)}])
    resp = _post(client, auth, rate=5, channel="whatsapp")
    assert resp.status_code == 202, resp.get_json()
    out = resp.get_json()
    assert resp.headers["Location"].endswith(f"/api/broadcasts/{out['id']}")
    [(job_type, payload)] = _jobs(runtime)
    assert job_type == "broadcast" and out["job"]["job_type"] == "broadcast"
    assert payload["broadcast_id"] == out["id"] and payload["provider"] == "webhook"
    got = client.get(f"/api/broadcasts/{out['id']}", headers=auth).get_json()
    assert got["status"] == "queued" and got["job_id"] == out["job"]["id"]
    assert got["rate_per_second"] == 5 and got["channel"] == "whatsapp"


def test_list_is_keyset_paginated_and_capped(client, auth, runtime, business):
    add_leads(runtime, business, [{"name": "Ann", "phone": phone(1)}])
    ids = [_post(client, auth).get_json()["id"] for _ in range(5)]
    page = client.get("/api/broadcasts?limit=2", headers=auth).get_json()
    assert [b["id"] for b in page["items"]] == ids[::-1][:2]
    page2 = client.get(f"/api/broadcasts?limit=2&before={page['next_before']}", headers=auth)
    assert [b["id"] for b in page2.get_json()["items"]] == ids[::-1][2:4]
    for bad in ("limit=501", "limit=0", "limit=x", "before=-1", f"limit={'9' * 30}"):
        resp = client.get(f"/api/broadcasts?{bad}", headers=auth)
        assert resp.status_code == 400 and resp.get_json()["error"] == "Invalid query", bad
    resp = client.get("/api/broadcasts/1/recipients?status=lost", headers=auth)
    assert resp.status_code == 400


def test_another_business_broadcast_is_404_on_every_endpoint(runtime, client, auth, business):
    other = new_business(runtime)
    other_auth = token_for(runtime, other)
    add_leads(runtime, other, [{"name": "Theirs", "phone": phone(1)}])
    theirs = _post(client, other_auth).get_json()["id"]
    for method, path in (
        ("GET", f"/api/broadcasts/{theirs}"),
        ("GET", f"/api/broadcasts/{theirs}/recipients"),
        ("POST", f"/api/broadcasts/{theirs}/cancel"),
        ("GET", "/api/broadcasts/999999"),
    ):
        resp = client.open(path, method=method, headers=auth)
        assert resp.status_code == 404, (method, path)
        assert resp.get_json()["error"] == "Not found"
    assert client.get("/api/broadcasts", headers=auth).get_json()["items"] == []
    # the lead selection is the caller's business only: their leads are never in my broadcast
    out = _post(client, auth, dry_run=True).get_json()
    assert out["count"] == 0 and out["selected"] == 0
    # and their cancel stays theirs
    assert (
        client.get(f"/api/broadcasts/{theirs}", headers=other_auth).get_json()["cancel_requested"]
        is False
    )


def test_opt_outs_validate_and_cap(client, auth):
    resp = client.post("/api/broadcasts/opt-outs", json={"phones": ["12", phone(1)]}, headers=auth)
    assert resp.status_code == 400 and resp.get_json()["details"] == {"invalid_phones": ["12"]}
    too_many = {"phones": [phone(i) for i in range(1001)]}
    assert client.post("/api/broadcasts/opt-outs", json=too_many, headers=auth).status_code == 400
    long = {"phones": ["1" * 65]}
    assert client.post("/api/broadcasts/opt-outs", json=long, headers=auth).status_code == 400
    assert (
        client.post(
            "/api/broadcasts/opt-outs", json={"phones": [phone(1)]}, headers=auth
        ).get_json()["added"]
        == 1
    )
    resp = client.delete("/api/broadcasts/opt-outs", json={"phones": [phone(1)]}, headers=auth)
    assert resp.get_json()["removed"] == 1


def _recipient(runtime, business: int, status: str = "sent", sid: str | None = "SM1") -> int:
    with runtime.session() as s:
        bid = s.execute(
            text(
                "INSERT INTO broadcasts (business_id, channel, template, provider, selection,"
                " status) VALUES (:b, 'sms', 'x', 'twilio', '{}', 'sending') RETURNING id"
            ),
            {"b": business},
        ).scalar()
        return s.execute(
            text(
                "INSERT INTO broadcast_recipients (broadcast_id, business_id, lead_id, phone,"
                " status, provider_message_id)"
                " VALUES (:bid, :b, 1, '+14152000001', :st, :sid) RETURNING id"
            ),
            {"bid": bid, "b": business, "st": status, "sid": sid},
        ).scalar()


def _status(runtime, rid: int) -> tuple:
    with runtime.session() as s:
        return s.execute(
            text("SELECT status, error FROM broadcast_recipients WHERE id = :i"), {"i": rid}
        ).one()


def test_status_callback_needs_a_valid_twilio_signature(runtime, client, business):
    rid = _recipient(runtime, business)
    url = f"https://hooks.example.com/webhooks/twilio/broadcast-status?r={rid}"
    form = {"MessageSid": "SM1", "MessageStatus": "delivered"}
    path = f"/webhooks/twilio/broadcast-status?r={rid}"
    forged = twilio_signature(url, form, token="not-the-token")
    assert client.post(path, data=form, headers={"X-Twilio-Signature": forged}).status_code == 403
    assert client.post(path, data=form).status_code == 403
    # signed for another recipient: the URL is part of what is signed
    other = twilio_signature(url.replace(f"r={rid}", f"r={rid + 1}"), form)
    assert client.post(path, data=form, headers={"X-Twilio-Signature": other}).status_code == 403
    assert _status(runtime, rid)[0] == "sent"
    ok = twilio_signature(url, form, token=AUTH_TOKEN)
    resp = client.post(path, data=form, headers={"X-Twilio-Signature": ok})
    assert resp.status_code == 200, resp.get_json()
    assert _status(runtime, rid)[0] == "delivered"
    failed = {"MessageSid": "SM1", "MessageStatus": "undelivered", "ErrorCode": "30003"}
    sig = twilio_signature(url, failed)
    assert client.post(path, data=failed, headers={"X-Twilio-Signature": sig}).status_code == 200
    assert _status(runtime, rid) == ("failed", "twilio undelivered (error 30003)")
    # a signed report for a message that is not the recipient's is refused
    wrong = {"MessageSid": "SM2", "MessageStatus": "delivered"}
    sig = twilio_signature(url, wrong)
    assert client.post(path, data=wrong, headers={"X-Twilio-Signature": sig}).status_code == 409
