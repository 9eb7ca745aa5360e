"""Tenant isolation: business B's token gets 404 for every one of business A's objects, on
every route that takes an id (core and plugin, read from the url_map), and nothing of A
changes."""

from __future__ import annotations

import re

from sqlalchemy import text

from prosaas_core.api.app import create_app
from prosaas_core.models import Call
from prosaas_core.testing import bearer, business_with_token

PARAM = re.compile(r"<(?:[^:>]+:)?(\w+)>")
MISSING = {
    "job_id": "987654321",
    "lead_id": "987654321",
    "import_id": "987654321",
    "schedule_id": "987654321",
}
MISSING["broadcast_id"] = "987654321"
MISSING_SID = "CA_missing_000"


def _snapshot(rt) -> dict:
    with rt.engine.connect() as conn:
        return {
            table: conn.execute(text(f"SELECT * FROM {table} ORDER BY id")).all()
            for table in ("background_jobs", "leads", "lead_imports", "calls", "prosaas_schedules")
        }


def test_other_business_objects_answer_404_like_missing_ones_and_stay_unchanged(runtime):
    app = create_app(runtime=runtime)
    client = app.test_client()
    a_id, a_tok = business_with_token(runtime, "A")
    _, b_tok = business_with_token(runtime, "B")
    ha, hb = bearer(a_tok), bearer(b_tok)
    job = client.post(
        "/api/jobs", json={"job_type": "acme_echo", "payload": {"message": "a"}}, headers=ha
    ).get_json()["id"]
    failed = client.post(
        "/api/jobs", json={"job_type": "acme_fail", "payload": {}}, headers=ha
    ).get_json()["id"]
    with runtime.engine.begin() as conn:  # one of A's jobs failed for good: retryable by A
        conn.execute(text("UPDATE background_jobs SET status='failed' WHERE id=:i"), {"i": failed})
    lead = client.post("/api/leads", json={"phone": "+14155552671"}, headers=ha).get_json()["id"]
    imp = client.post(
        "/api/leads/import",
        data="name,phone\nX,+14155552672\n",
        content_type="text/csv",
        headers=ha,
    ).get_json()["import_id"]
    with runtime.session() as s:
        s.add(Call(business_id=a_id, call_sid="CA_a_1", recording_path="/etc/hostname"))
    sched = client.post(
        "/api/schedules",
        json={"name": "a-daily", "cron": "0 3 * * *", "job_type": "acme_echo",
              "payload": {"message": "a"}},
        headers=ha,
    ).get_json()["id"]  # fmt: skip
    mine = {"job_id": str(job), "lead_id": str(lead), "import_id": str(imp), "call_sid": "CA_a_1",
            "schedule_id": str(sched)}  # fmt: skip
    if "broadcast" in runtime.registry.job_types:  # the broadcast plugin's routes
        body = {"lead_ids": [lead], "template": "Hi", "provider": "log"}
        resp = client.post("/api/broadcasts", json=body, headers=ha)
        mine["broadcast_id"] = str(resp.get_json()["id"])
    missing = {**MISSING, "call_sid": MISSING_SID}
    before = _snapshot(runtime)

    checked = []
    for rule in app.url_map.iter_rules():
        names = PARAM.findall(rule.rule)
        # the dashboard signs in with a session cookie, not a bearer token: its own tenancy
        # test is tests/test_dashboard.py::test_every_dashboard_id_route_is_scoped
        if not names or rule.rule.startswith("/dashboard/"):
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            unknown = [n for n in names if n not in mine]
            assert not unknown, f"{rule.rule}: teach this test the id kind {unknown}"
            for n in names:  # A's object in this slot, the others A's too
                url_a = PARAM.sub(lambda m: mine[m[1]], rule.rule)
                url_missing = PARAM.sub(
                    lambda m, n=n: (missing if m[1] == n else mine)[m[1]], rule.rule
                )
                kw = {"json": {}} if method in {"POST", "PUT", "PATCH"} else {}
                got = client.open(url_a, method=method, headers=hb, **kw)
                assert got.status_code == 404, (method, url_a, got.get_data(as_text=True))
                assert set(got.get_json()) == {"error", "details"}
                ref = client.open(url_missing, method=method, headers=hb, **kw)
                assert ref.status_code == 404
                assert got.get_json()["error"] == ref.get_json()["error"]
                detail = str(got.get_json()["details"]).replace(mine[n], "ID")
                assert detail == str(ref.get_json()["details"]).replace(missing[n], "ID")
                checked.append(f"{method} {rule.rule}")
    assert {"GET /api/jobs/<id:job_id>", "POST /api/jobs/<id:job_id>/cancel"} <= set(checked)
    assert {"POST /api/jobs/<id:job_id>/retry", "GET /api/leads/<id:lead_id>"} <= set(checked)
    assert "GET /api/leads/imports/<id:import_id>" in checked
    assert "DELETE /api/schedules/<id:schedule_id>" in checked

    # lists never show A's objects to B, even when filtered by A's import
    for url in (
        "/api/jobs",
        "/api/leads",
        f"/api/leads?import_id={imp}",
        "/api/jobs?status=failed",
        "/api/schedules",
    ):
        body = client.get(url, headers=hb).get_json()
        assert body["items"] == [], url
    assert _snapshot(runtime) == before
    # while A still sees and steers its own objects
    assert client.get(f"/api/jobs/{job}", headers=ha).status_code == 200
    assert client.post(f"/api/jobs/{failed}/retry", headers=ha).status_code == 202
