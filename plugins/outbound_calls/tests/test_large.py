"""A 50,000-lead campaign: the job prepares it in batches and ends; no worker thread waits for
slots, so another business's campaign (enqueued through `prosaas jobs enqueue`) starts at once."""

from __future__ import annotations

import json

import pytest
from prosaas_outbound_calls.testing import CALLER, add_business, campaign, start
from sqlalchemy import text

from prosaas_core.testing import wait_until

pytestmark = pytest.mark.slow


def test_50000_leads_prepared_by_the_job_while_slots_pace_the_calls(
    runtime, client, acme, web, fake, start_worker, cli
):
    business_id, auth = acme
    with runtime.session() as s:
        s.execute(
            text(
                "INSERT INTO leads (business_id, phone) SELECT :b, '+1212' || (2000000 + g)::text"
                " FROM generate_series(1, 50000) g"
            ),
            {"b": business_id},
        )
    fake.min_duration = fake.max_duration = 2.0
    start_worker()
    cid = start(client, auth, max_concurrent=2, calls_per_second=5)

    def job_status(job_id: int) -> str:
        with runtime.session() as s:
            return s.execute(
                text("SELECT status FROM background_jobs WHERE id = :i"), {"i": job_id}
            ).scalar_one()

    wait_until(lambda: job_status(cid) == "succeeded", 180, "the preparing job")
    got = campaign(client, auth, cid)
    assert got["prepared"] is True and got["leads"]["to_call"] == 50_000
    assert got["counts"]["pending"] >= 49_900 and got["state"] == "running"

    # the same worker takes another business's campaign at once, by the CLI this time
    other_id, other_auth = add_business(runtime, "Other", caller="+12125550177")
    with runtime.session() as s:
        s.execute(
            text("INSERT INTO leads (business_id, phone) VALUES (:b, '+13125550123')"),
            {"b": other_id},
        )
    payload = json.dumps({"all": True, "caller_id": "+12125550177"})
    out = cli("jobs", "enqueue", "enqueue_outbound_calls", "--business", str(other_id),
              "--payload", payload, "--json", check=True)  # fmt: skip
    other = json.loads(out.stdout)["id"]
    wait_until(lambda: fake.creates.get("+13125550123"), 30, "the other campaign's call")
    wait_until(lambda: campaign(client, other_auth, other)["state"] == "completed", 30, "its end")
    assert fake.max_live[CALLER] <= 2
    resp = client.post(f"/api/outbound-calls/{cid}/cancel", headers=auth)
    assert resp.get_json()["counts"]["cancelled"] >= 49_900
