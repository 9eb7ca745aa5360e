"""With a real worker: skipped leads are counted, busy / no-answer are retried per the policy,
a number the provider refuses fails without a retry, and `prosaas doctor` sees pending work."""

from __future__ import annotations

import time

import pytest
from prosaas_outbound_calls.testing import add_leads, campaign, phone, start
from sqlalchemy import text

from prosaas_core.testing import wait_until

pytestmark = pytest.mark.slow


def outcomes(runtime, cid) -> dict[str, tuple]:
    with runtime.session() as s:
        rows = s.execute(
            text(
                "SELECT raw_phone, status, skip_reason, attempts FROM outbound_targets"
                " WHERE campaign_id = :c"
            ),
            {"c": cid},
        ).all()
    return {r[0]: tuple(r[1:]) for r in rows}


def test_skips_retries_and_refusals(runtime, client, acme, web, fake, start_worker, cli):
    business_id, auth = acme
    ok, busy, silent, refused, dnc_listed, dup = (phone(i) for i in range(6))
    add_leads(runtime, business_id, [ok, busy, silent, refused, dnc_listed, dup, dup, "123"])
    add_leads(runtime, business_id, [phone(7)], tags=["do_not_call"])
    cli("outbound-calls", "dnc", "add", "--business", str(business_id), dnc_listed, check=True)
    fake.plan(busy, outcome="busy")
    fake.plan(silent, outcome="no-answer")
    fake.plan(refused, error=True)
    retry = {"attempts": 3, "spacing_seconds": 0.5, "on": ["busy"]}
    cid = start(client, auth, max_concurrent=3, calls_per_second=20, retry=retry)
    doctor = cli("doctor")
    assert "outbound-dialer" in doctor.stdout  # pending work, no worker yet
    start_worker()
    got = wait_until(
        lambda: (c := campaign(client, auth, cid))["state"] == "completed" and c, 60, "the end"
    )
    assert got["leads"] == {
        "total": 9,
        "to_call": 5,
        "skipped_invalid": 1,
        "skipped_dnc": 2,
        "skipped_duplicate": 1,
    }
    assert fake.creates[ok] == 1
    assert fake.creates[busy] == 3  # busy is retried, up to 3 attempts in all
    assert fake.creates[silent] == 1  # no-answer is not in this policy
    assert refused not in fake.creates and dnc_listed not in fake.creates
    assert fake.creates[dup] == 1 and phone(7) not in fake.creates
    seen = outcomes(runtime, cid)
    assert seen[ok] == ("completed", None, 1)
    assert seen[busy] == ("busy", None, 3)
    assert seen[silent] == ("no-answer", None, 1)
    assert seen[refused] == ("failed", None, 1)
    assert seen[dnc_listed] == ("skipped", "do_not_call", 0)
    assert seen["123"] == ("skipped", "invalid_number", 0)
    busy_times = sorted(c.created.timestamp() for c in fake.calls.values() if c.to == busy)
    assert all(b - a >= 0.5 for a, b in zip(busy_times, busy_times[1:], strict=False))
    assert got["counts"]["skipped_duplicate"] == 1 and got["counts"]["busy"] == 1
    with runtime.session() as s:
        job = s.execute(
            text("SELECT status, result FROM background_jobs WHERE id = :c"), {"c": cid}
        ).one()
    assert job[0] == "succeeded" and job[1]["to_call"] == 5


def test_a_429_is_given_back_and_a_5xx_reconciled_before_the_retry(
    runtime, client, acme, web, fake, start_worker
):
    business_id, auth = acme
    throttled, broken, fine = phone(1), phone(2), phone(3)
    add_leads(runtime, business_id, [throttled, broken, fine])
    fake.plan(throttled, error=429, error_times=1)
    fake.plan(broken, error=500, error_times=1)
    w = start_worker()
    began = time.monotonic()
    cid = start(client, auth, max_concurrent=3, calls_per_second=20)
    wait_until(lambda: campaign(client, auth, cid)["state"] == "completed", 60, "the end")
    assert (fake.refused[throttled], fake.creates[throttled]) == (1, 1)
    assert (fake.refused[broken], fake.creates[broken]) == (1, 1)
    seen = outcomes(runtime, cid)
    assert seen[throttled] == seen[broken] == seen[fine] == ("completed", None, 1)
    # the 5xx target waited for the reconcile delay (3 s here) before it was dialed again
    redial = min(c.created.timestamp() for c in fake.calls.values() if c.to == broken)
    assert redial - (time.time() - (time.monotonic() - began)) >= 3 - 0.5
    log = w.log()
    assert "OUTBOUND_CALL_REFUSED" in log and "OUTBOUND_CLAIM_RECONCILED" in log
