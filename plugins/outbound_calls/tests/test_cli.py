"""`prosaas outbound-calls ...` as a user runs it: one-line errors, JSON where scripts read it."""

from __future__ import annotations

import json

from prosaas_outbound_calls.testing import CALLER, add_leads, phone


def test_numbers_and_dnc_lists(cli, business):
    b = str(business)
    assert cli("outbound-calls", "numbers", "add", "--business", b, CALLER, "--label", "main",
               check=True).stdout.strip() == f"added {CALLER}"  # fmt: skip
    listed = cli("outbound-calls", "numbers", "list", "--business", b, "--json", check=True)
    assert json.loads(listed.stdout) == [{"phone": CALLER, "label": "main"}]
    bad = cli("outbound-calls", "numbers", "add", "--business", b, "212-555-0100")
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == ["error: '212-555-0100' must be an E.164 number "
                                               "such as +14155550100"]  # fmt: skip
    assert cli("outbound-calls", "dnc", "add", "--business", b, phone(1), check=True)
    assert json.loads(
        cli("outbound-calls", "dnc", "list", "--business", b, "--json", check=True).stdout
    ) == [{"phone": phone(1), "reason": None}]
    gone = cli("outbound-calls", "dnc", "remove", "--business", b, phone(2))
    assert gone.returncode == 1 and "not in the list" in gone.stderr
    missing = cli("outbound-calls", "numbers", "add", "--business", "999999", CALLER)
    assert missing.returncode == 1 and missing.stderr.strip() == "error: business 999999 not found"


def test_start_dry_run_then_start_show_and_control(cli, runtime, business):
    b = str(business)
    cli("outbound-calls", "numbers", "add", "--business", b, CALLER, check=True)
    add_leads(runtime, business, [phone(1), phone(2), "nope"])
    payload = json.dumps({"all": True, "caller_id": CALLER, "calls_per_second": 1})
    dry = cli("outbound-calls", "start", "--business", b, "--payload", payload, "--dry-run",
              "--json", check=True)  # fmt: skip
    preview = json.loads(dry.stdout)
    assert preview["leads"]["to_call"] == 2 and preview["leads"]["skipped_invalid"] == 1
    out = cli("outbound-calls", "start", "--business", b, "--payload", payload, "--json",
              check=True)  # fmt: skip
    cid = json.loads(out.stdout)["id"]
    shown = json.loads(
        cli("outbound-calls", "show", str(cid), "--business", b, "--json", check=True).stdout
    )
    assert shown["state"] == "running"
    assert shown["rate"]["calls_per_second"] == 1
    assert cli("outbound-calls", "pause", str(cid), "--business", b, check=True).stdout.strip() \
        == f"campaign {cid}: paused"  # fmt: skip
    again = cli("outbound-calls", "pause", str(cid), "--business", b)
    assert again.returncode == 1
    assert again.stderr.strip() == f"error: cannot pause campaign {cid}: it is paused"
    other = cli("outbound-calls", "show", str(cid), "--business", str(business + 1))
    assert other.returncode == 1 and "not found" in other.stderr


def test_start_errors_are_one_line(cli, business):
    b = str(business)
    for payload, needle in [
        ("{", "--payload is not valid JSON"),
        ('{"all": true}', "invalid payload: caller_id"),
        (json.dumps({"all": True, "caller_id": CALLER}), "caller_id is not one of the business"),
    ]:
        res = cli("outbound-calls", "start", "--business", b, "--payload", payload)
        assert res.returncode == 1, res
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], lines


def test_limits_show_set_clear(cli, business):
    b = str(business)
    shown = json.loads(cli("outbound-calls", "limits", "--business", b, "--json",
                           check=True).stdout)  # fmt: skip
    assert (shown["max_concurrent"], shown["max_calls_per_second"]) == (20, 50.0)  # settings
    cli("outbound-calls", "limits", "--business", b, "--max-concurrent", "4", check=True)
    shown = json.loads(cli("outbound-calls", "limits", "--business", b, "--json").stdout)
    assert shown["max_concurrent"] == 4 and shown["max_calls_per_second"] == 50.0
    cli("outbound-calls", "limits", "--business", b, "--clear", check=True)
    assert (
        json.loads(cli("outbound-calls", "limits", "--business", b, "--json").stdout)[
            "max_concurrent"
        ]
        == 20
    )
    bad = cli("outbound-calls", "limits", "--business", b, "--max-concurrent", "0")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
