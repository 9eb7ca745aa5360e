"""Schemathesis (pinned in requirements-dev.txt) against a live `prosaas serve` with two
businesses' tokens: every check, object-level authorization between the two included, with a
bounded number of deterministic examples, so the run takes a minute or two."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from prosaas_core.testing import ServeProcess, business_with_token

pytestmark = pytest.mark.slow

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
#: per-operation examples. No --max-time: a time budget makes fuzzing and stateful testing
#: repeat until it is spent, so what a run covers would depend on the machine's load; with a
#: fixed number of deterministic examples every run sends the same cases (about half a minute here).
MAX_EXAMPLES, TIMEOUT = 40, 600

CONFIG = """\
# NUL characters are refused with 400 everywhere (PostgreSQL text cannot hold them): a rule
# the document states in prose, not in every string's schema
generation.allow-x00 = false

# gunicorn refuses an over-long request line (414) or headers (431) before the app: rejections
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "414", "415", "422",
                     "428", "429", "431", "5XX"]

[auth.wfc]
path = "{auth}"
peers = ["alice", "bob"]

# Rules no JSON Schema can state, so a schema-valid body may still be answered 400: a lead's
# phone is checked by libphonenumber; a CSV needs a header with a phone or email column.
# (include-name: several include-* keys match an operation when ANY of them does)
[[operations]]
include-name = "POST /api/leads"
checks.positive_data_acceptance.expected-statuses = ["2XX", "400", "401", "403"]

[[operations]]
include-name = "POST /api/leads/import"
checks.positive_data_acceptance.expected-statuses = ["2XX", "400", "401", "403", "413"]
# Job payloads carry phone numbers (libphonenumber), a caller id that must be one of the
# business's numbers, a template whose placeholders must be lead fields; a schedule's cron and
# time zone are read by croniter and zoneinfo; opt-outs are phone numbers.
[[operations]]
include-name = "POST /api/jobs"
checks.positive_data_acceptance.expected-statuses = ["2XX", "400", "401", "403", "409"]
[[operations]]
include-name = "POST /api/schedules"
checks.positive_data_acceptance.expected-statuses = ["2XX", "400", "401", "403", "409"]
[[operations]]
include-name = "POST /api/broadcasts"
checks.positive_data_acceptance.expected-statuses = ["2XX", "400", "401", "403"]
[[operations]]
include-name = "POST /api/broadcasts/opt-outs"
checks.positive_data_acceptance.expected-statuses = ["2XX", "400", "401", "403"]
[[operations]]
include-name = "DELETE /api/broadcasts/opt-outs"
checks.positive_data_acceptance.expected-statuses = ["2XX", "400", "401", "403"]
[[operations]]
include-name = "POST /api/outbound-calls"
checks.positive_data_acceptance.expected-statuses = ["2XX", "400", "401", "403"]
"""


def test_schemathesis_all_checks_two_businesses(env, runtime, tmp_path):
    _, alice = business_with_token(runtime, "Alice Co")
    _, bob = business_with_token(runtime, "Bob Co")
    auth = tmp_path / "auth.json"
    auth.write_text(
        json.dumps(
            {
                "auth": [
                    {
                        "name": name,
                        "fixedHeaders": [{"name": "Authorization", "value": f"Bearer {t}"}],
                    }
                    for name, t in (("alice", alice), ("bob", bob))
                ]
            }
        )
    )
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG.format(auth=auth))
    serve_env = {
        **env,
        "TWILIO_AUTH_TOKEN": "schemathesis-token",
        "TWILIO_WEBHOOK_BASE_URL": "https://calls.example.com",
    }
    with ServeProcess(serve_env, workers=1, threads=8, log_path=tmp_path / "serve.log") as srv:
        proc = subprocess.run(
            [
                SCHEMATHESIS,
                "--config-file",
                str(config),
                "--no-color",
                "run",
                srv.url + "/api/openapi.json",
                "--checks",
                "all",
                "--max-examples",
                str(MAX_EXAMPLES),
                "--workers",
                "2",
                "--seed",
                "1",
                "--generation-deterministic",  # the same cases every run, not new ones
                "--report-dir",
                str(tmp_path / "report"),
            ],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            cwd=tmp_path,
        )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-20000:] + "\n--- serve log ---\n" + srv.log()
    assert "object_level_authorization" not in out or "will not run" not in out
