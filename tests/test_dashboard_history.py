"""The dashboard's History page and its JSON keep counting jobs after retention prunes them
(the rollups + the rows past the watermark, as ``jobs stats`` reads), scoped to a business."""

from __future__ import annotations

import json
import re

import pytest
from sqlalchemy import text

from prosaas_core.api.app import create_app
from prosaas_core.testing import business_with_token
from prosaas_core.tokens import create_admin_token

#: per business: finished 10 and 40 days ago (pruned below), one just now (past the watermark),
#: and a job retried by hand (queued, an old finished_at: neither counted nor pruned)
ROWS = """
INSERT INTO background_jobs (business_id, job_type, status, payload, started_at, finished_at)
VALUES
 (:a, 'acme_echo', 'succeeded', '{}', now() - interval '10 days' - interval '3 seconds',
  now() - interval '10 days'),
 (:a, 'acme_echo', 'succeeded', '{}', now() - interval '10 days' - interval '1 second',
  now() - interval '10 days'),
 (:a, 'acme_echo', 'failed', '{}', now() - interval '10 days', now() - interval '10 days'),
 (:a, 'acme_echo', 'succeeded', '{}', now() - interval '40 days', now() - interval '40 days'),
 (:a, 'acme_echo', 'succeeded', '{}', now(), now()),
 (:a, 'acme_echo', 'queued', '{}', NULL, now() - interval '10 days'),
 (:b, 'acme_sleep', 'succeeded', '{}', now() - interval '10 days', now() - interval '10 days')
"""
RETENTION = {"PROSAAS_RETENTION_SUCCEEDED_DAYS": "7", "PROSAAS_RETENTION_FAILED_DAYS": "7"}


@pytest.fixture
def app(runtime):
    return create_app(runtime=runtime)


@pytest.fixture
def data(runtime) -> dict:
    """Two businesses with tokens, an admin token, the rows above, and UTC days to expect."""
    a, a_token = business_with_token(runtime, "Alpha")
    b, b_token = business_with_token(runtime, "Beta")
    with runtime.session() as s:
        admin = create_admin_token(s, "ops")[0]
    with runtime.engine.begin() as conn:
        conn.execute(text(ROWS), {"a": a, "b": b})
        today, ten, forty = conn.execute(
            text("SELECT d, d - 10, d - 40 FROM (SELECT (now() AT TIME ZONE 'UTC')::date AS d) x")
        ).one()
    days = {"today": today.isoformat(), "ten": ten.isoformat(), "forty": forty.isoformat()}
    return {"a": a, "b": b, "a_token": a_token, "b_token": b_token, "admin": admin, **days}


def client_for(app, token: str):
    client = app.test_client()
    page = client.get("/dashboard/login").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    assert client.post("/dashboard/login", data={"csrf": csrf, "token": token}).status_code == 303
    return client


def day(body: dict, iso: str) -> dict:
    (row,) = [d for d in body["per_day"] if d["day"] == iso]
    return {k: v for k, v in row.items() if k != "day"}


def rows_left(runtime) -> int:
    with runtime.engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM background_jobs")).scalar()


def test_history_survives_pruning_per_business(app, runtime, cli, data):
    a = client_for(app, data["a_token"])
    before = a.get("/dashboard/api/history").json
    cli("jobs", "prune", extra_env=RETENTION, check=True)
    assert rows_left(runtime) == 2  # the job finished just now and the retried one
    after = a.get("/dashboard/api/history").json
    assert after == before
    assert after["days"] == 30 and after["business_id"] == data["a"]
    assert len(after["per_day"]) == 30 and after["per_day"][-1]["day"] == data["today"]
    assert day(after, data["ten"]) == {"succeeded": 2, "failed": 1, "cancelled": 0}
    assert day(after, data["today"]) == {"succeeded": 1, "failed": 0, "cancelled": 0}
    assert sum(map(sum, after["series"].values())) == 4  # the 40-day-old one is out
    assert after["series"] == {"acme_echo": [0] * 19 + [3] + [0] * 9 + [1]}
    echo = {r["status"]: r for r in after["totals"]}
    assert echo["succeeded"]["jobs"] == 3 and echo["succeeded"]["max_seconds"] == 3.0
    assert echo["failed"]["jobs"] == 1
    # the same figures as `jobs stats` (one reader of the history)
    stats = cli("jobs", "stats", "--business", str(data["a"]), "--json", check=True).stdout
    assert json.loads(stats) == after["totals"]
    # a longer window reaches the 40-day-old job, from the rollups only
    ninety = a.get("/dashboard/api/history?days=90").json
    assert day(ninety, data["forty"])["succeeded"] == 1
    # a business never sees another's history, whatever it asks for
    assert a.get(f"/dashboard/api/history?business={data['b']}").json == after
    page = a.get("/dashboard/history").text
    assert "<svg" in page and "acme_echo: 4" in page and "acme_sleep" not in page
    assert f"acme_echo: 3 finished, {data['ten']}" in page


def test_operator_sees_every_business_or_one(app, cli, data):
    cli("jobs", "prune", extra_env=RETENTION, check=True)
    ops = client_for(app, data["admin"])
    every = ops.get("/dashboard/api/history?days=7").json
    assert every["business_id"] is None and every["series"] == {"acme_echo": [0] * 6 + [1]}
    every = ops.get("/dashboard/api/history").json
    assert set(every["series"]) == {"acme_echo", "acme_sleep"}
    assert day(every, data["ten"]) == {"succeeded": 3, "failed": 1, "cancelled": 0}
    beta = ops.get(f"/dashboard/api/history?business={data['b']}").json
    assert beta["business_id"] == data["b"] and set(beta["series"]) == {"acme_sleep"}
    assert ">History<" in ops.get("/dashboard/").text  # in the navigation


def test_bad_input_and_sign_in(app, data):
    assert app.test_client().get("/dashboard/api/history").status_code == 401
    assert app.test_client().get("/dashboard/history").status_code == 302
    ops = client_for(app, data["admin"])
    for query in ("days=0", "days=367", "days=abc", "days=-1", "business=x", "business=-2"):
        resp = ops.get(f"/dashboard/api/history?{query}")
        assert resp.status_code == 400, query
        assert set(resp.json) == {"error", "details"} and resp.json["details"], query
    assert ops.get("/dashboard/history?days=abc").status_code == 400
