"""The delete_leads blueprint through the Flask test client (real PostgreSQL and Redis)."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from prosaas_core.leads import MAX_LEAD_IDS
from prosaas_core.testing import auth_header


def _auth(runtime, business_id: int) -> dict:
    return auth_header(runtime, business_id)


def _jobs(runtime) -> list[tuple]:
    with runtime.session() as s:
        return s.execute(
            text("SELECT business_id, job_type, status, payload FROM background_jobs ORDER BY id")
        ).all()


@pytest.mark.parametrize(
    "body, needle",
    [
        ({}, "one of lead_ids, filter"),
        ({"filter": {}}, "empty filter"),
        ({"filter": {"colour": "red"}}, "colour"),
        ({"lead_ids": [1], "all": True}, "only one of"),
        ({"lead_ids": list(range(1, MAX_LEAD_IDS + 2))}, "lead_ids"),
        ({"lead_ids": ["x"]}, "lead_ids"),
    ],
)
def test_bad_selections_are_400_and_enqueue_nothing(runtime, client, auth, body, needle):
    resp = client.post("/api/leads/bulk-delete", json=body, headers=auth)
    assert resp.status_code == 400, resp.get_json()
    data = resp.get_json()
    assert data["error"] == "Invalid payload"
    assert needle in str(data["details"])
    assert _jobs(runtime) == []


def test_needs_a_token_and_json(runtime, client, auth):
    assert client.post("/api/leads/bulk-delete", json={"all": True}).status_code == 401
    resp = client.post("/api/leads/bulk-delete", data="all", headers=auth)
    assert resp.status_code == 415
    assert _jobs(runtime) == []


def test_202_with_the_job_then_409_while_it_is_active(runtime, client, auth, business):
    resp = client.post("/api/leads/bulk-delete", json={"lead_ids": [5, 6]}, headers=auth)
    assert resp.status_code == 202, resp.get_json()
    job = resp.get_json()
    assert job["job_type"] == "delete_leads" and job["status"] == "queued"
    assert resp.headers["Location"].endswith(f"/api/jobs/{job['id']}")
    again = client.post("/api/leads/bulk-delete", json={"all": True}, headers=auth)
    assert again.status_code == 409
    assert again.get_json()["details"]["id"] == job["id"]
    [(business_id, job_type, status, payload)] = _jobs(runtime)
    assert (business_id, job_type, status) == (business, "delete_leads", "queued")
    assert payload["lead_ids"] == [5, 6]


def test_import_delete_is_404_for_another_business_import(runtime, client, auth, business):
    with runtime.session() as s:
        other = s.execute(text("INSERT INTO businesses (name) VALUES ('B') RETURNING id")).scalar()
        mine, theirs = (
            s.execute(
                text("INSERT INTO lead_imports (business_id) VALUES (:b) RETURNING id"), {"b": b}
            ).scalar()
            for b in (business, other)
        )
    resp = client.post(f"/api/imports/{theirs}/delete", headers=auth)
    assert resp.status_code == 404 and resp.get_json()["error"] == "Not found"
    assert client.post("/api/imports/999999/delete", headers=auth).status_code == 404
    assert _jobs(runtime) == []
    resp = client.post(f"/api/imports/{mine}/delete", headers=auth)
    assert resp.status_code == 202
    [(business_id, job_type, _, payload)] = _jobs(runtime)
    assert (business_id, job_type, payload) == (
        business,
        "delete_imported_leads",
        {"import_id": mine},
    )
