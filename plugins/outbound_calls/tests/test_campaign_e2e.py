"""End to end: real `prosaas worker` processes dial through the SDK to the local Twilio
stand-in, which calls back the app served on a local port; the recordings plugin downloads
each call's recording."""

from __future__ import annotations

import pytest
from prosaas_outbound_calls.testing import (
    CALLER,
    add_leads,
    campaign,
    max_in_window,
    phone,
    start,
)
from sqlalchemy import text

from prosaas_core.limits import Limits
from prosaas_core.testing import wait_until


@pytest.mark.slow
def test_200_leads_five_live_calls_each_called_once_recordings_downloaded(
    runtime, client, acme, web, fake, start_worker, recordings_dir
):
    business_id, auth = acme
    phones = [phone(i) for i in range(200)]
    add_leads(runtime, business_id, phones)
    workers = [start_worker(), start_worker()]
    cps = 25
    cid = start(client, auth, max_concurrent=5, calls_per_second=cps, record=True)
    wait_until(lambda: campaign(client, auth, cid)["state"] == "completed", 120, "completion")

    assert fake.max_live[CALLER] <= 5, fake.max_live  # the server never saw a sixth
    assert fake.max_live[CALLER] >= 4  # and the limit was used
    assert sorted(fake.creates) == sorted(phones)
    assert set(fake.creates.values()) == {1}  # every lead called exactly once
    # the rate: a burst of at most cps/10 then one call every 1/cps seconds
    assert max_in_window(fake.create_times, 1.0) <= cps + max(1, cps // 10) + 1
    got = campaign(client, auth, cid)
    assert got["counts"] == {"completed": 200, "retrying": 0}
    assert got["leads"]["to_call"] == 200 and got["live_calls"] == 0
    with runtime.session() as s:
        rows = s.execute(
            text(
                "SELECT c.direction, c.status, c.from_number, c.to_number, c.lead_id, t.lead_id "
                "FROM outbound_targets t JOIN calls c ON c.call_sid = t.call_sid "
                "WHERE t.campaign_id = :c"
            ),
            {"c": cid},
        ).all()
    assert len(rows) == 200
    assert {(r[0], r[1], r[2]) for r in rows} == {("outbound", "completed", CALLER)}
    assert sorted(r[3] for r in rows) == sorted(phones)
    assert all(r[4] == r[5] for r in rows)

    def downloaded() -> bool:
        with runtime.session() as s:
            return (
                s.execute(
                    text(
                        "SELECT count(*) FROM calls WHERE business_id = :b "
                        "AND recording_status = 'downloaded'"
                    ),
                    {"b": business_id},
                ).scalar_one()
                == 200
            )

    wait_until(downloaded, 60, "every recording downloaded")
    files = list((recordings_dir / str(business_id)).glob("CA*.mp3"))
    assert len(files) == 200
    assert set(fake.recordings_served.values()) == {1}
    assert Limits.on(runtime.redis).slots.active(f"outbound_calls:{business_id}") == 0
    assert all(c == 200 for c in fake.callback_codes), set(fake.callback_codes)
    # the calls API of the recordings plugin shows them
    listed = client.get("/api/calls?limit=500", headers=auth).get_json()["calls"]
    assert len(listed) == 200 and {c["direction"] for c in listed} == {"outbound"}
    for w in workers:
        assert "OUTBOUND-DIALER STARTED" in w.log()
