"""The update_leads blueprint through the Flask test client (real PostgreSQL and Redis)."""

from __future__ import annotations

import pytest
from sqlalchemy import text


def _payloads(runtime) -> list:
    with runtime.session() as s:
        return s.execute(text("SELECT payload FROM background_jobs ORDER BY id")).scalars().all()


@pytest.mark.parametrize(
    "body, needle",
    [
        ({"all": True, "set": {"email": "x@y.z"}}, "field 'email' cannot be set"),
        ({"all": True, "set": {"status": "won", "business_id": 2}}, "field 'business_id'"),
        ({"all": True, "set": {}}, "nothing to set"),
        ({"all": True}, "set"),
        ({"all": True, "set": {"status": None}}, "field 'status'"),
        ({"all": True, "set": {"status": " "}}, "must not be empty"),
        ({"all": True, "set": {"tags": "vip"}}, "field 'tags'"),
        ({"all": True, "set": {"owner": "x" * 201}}, "at most 200"),
        ({"filter": {}, "set": {"status": "won"}}, "empty filter"),
        ({"set": {"status": "won"}}, "one of lead_ids, filter"),
    ],
)
def test_bad_updates_are_400_naming_the_problem(runtime, client, auth, body, needle):
    resp = client.post("/api/leads/bulk-update", json=body, headers=auth)
    assert resp.status_code == 400, resp.get_json()
    assert resp.get_json()["error"] == "Invalid payload"
    assert needle in str(resp.get_json()["details"])
    assert _payloads(runtime) == []


def test_fields_left_out_stay_out_and_null_clears(runtime, client, auth):
    body = {"filter": {"status": ["new", "open"]}, "set": {"status": "won", "owner": None}}
    resp = client.post("/api/leads/bulk-update", json=body, headers=auth)
    assert resp.status_code == 202, resp.get_json()
    assert resp.get_json()["job_type"] == "update_leads"
    [payload] = _payloads(runtime)
    assert payload["set"] == {"status": "won", "owner": None}
    assert payload["filter"]["status"] == ["new", "open"]
