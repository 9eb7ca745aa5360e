"""The receipts blueprint through the Flask test client (real PostgreSQL and Redis)."""

from __future__ import annotations

from sqlalchemy import text


def test_receipts_are_recorded_for_the_callers_business(runtime, client, auth, business):
    resp = client.post("/api/receipts", json={"amount_cents": 1250}, headers=auth)
    assert resp.status_code == 201, resp.get_json()
    assert resp.get_json()["currency"] == "USD"
    resp = client.post("/api/receipts", json={"amount_cents": -1, "x": 1}, headers=auth)
    assert resp.status_code == 400
    assert {tuple(d["loc"]) for d in resp.get_json()["details"]} == {("amount_cents",), ("x",)}
    assert client.post("/api/receipts", json={"amount_cents": 1}).status_code == 401
    with runtime.session() as s:
        rows = s.execute(text("SELECT business_id, amount_cents FROM receipts")).all()
    assert rows == [(business, 1250)]


def test_delete_all_is_202_then_409(runtime, client, auth, business):
    resp = client.post("/api/receipts/delete-all", headers=auth)
    assert resp.status_code == 202, resp.get_json()
    assert resp.get_json()["job_type"] == "delete_receipts_all"
    assert client.post("/api/receipts/delete-all", headers=auth).status_code == 409
