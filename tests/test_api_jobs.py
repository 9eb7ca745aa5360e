"""The jobs API through the Flask test client: enqueue, list, show, cancel, retry, errors."""

from __future__ import annotations

import logging

import pytest
from rq import Queue
from sqlalchemy import func, select, text

from prosaas_core.api.app import create_app
from prosaas_core.models import BackgroundJob
from prosaas_core.testing import bearer, business_with_token, free_port, wait_until


@pytest.fixture
def client(runtime):
    return create_app(runtime=runtime).test_client()


@pytest.fixture
def tenant(runtime):
    return business_with_token(runtime, "A")


def _error(resp, status: int, error: str | None = None) -> dict:
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.is_json, resp.get_data(as_text=True)
    body = resp.get_json()
    assert set(body) == {"error", "details"}
    if error is not None:
        assert body["error"] == error
    return body


def _count_jobs(rt) -> int:
    with rt.session() as s:
        return s.scalar(select(func.count()).select_from(BackgroundJob))


def test_enqueue_answers_202_with_location_and_commits_then_pushes(client, runtime, tenant):
    bid, token = tenant
    r = client.post(
        "/api/jobs",
        json={"job_type": "acme_echo", "payload": {"message": "hi"}},
        headers=bearer(token),
    )
    assert r.status_code == 202
    body = r.get_json()
    assert body == {"id": body["id"], "status": "queued", "job_type": "acme_echo"}
    assert r.headers["Location"] == f"/api/jobs/{body['id']}"
    with runtime.session() as s:
        row = s.get(BackgroundJob, body["id"])
        assert (row.business_id, row.status, row.payload) == (bid, "queued", {"message": "hi"})
    # pushed right after the answer, by the process's pusher
    queue = Queue("default", connection=runtime.redis)
    wait_until(lambda: queue.job_ids == [f"prosaas-{body['id']}"], 5, "the job pushed")
    shown = client.get(r.headers["Location"], headers=bearer(token)).get_json()
    for key in ("id", "job_type", "business_id", "status", "attempts", "processed", "total"):
        assert key in shown
    assert (shown["status"], shown["business_id"], shown["result"], shown["error"]) == (
        "queued",
        bid,
        None,
        None,
    )
    assert shown["created_at"] and shown["started_at"] is None


def test_unique_type_already_active_answers_409_with_its_id(client, tenant):
    h = bearer(tenant[1])
    first = client.post("/api/jobs", json={"job_type": "acme_unique"}, headers=h)
    assert first.status_code == 202
    again = _error(client.post("/api/jobs", json={"job_type": "acme_unique"}, headers=h), 409)
    assert again["details"]["id"] == first.get_json()["id"]


def test_list_filters_and_pages_newest_first(client, tenant):
    h = bearer(tenant[1])
    ids = []
    for i in range(5):
        job_type = "acme_echo" if i % 2 == 0 else "acme_sleep"
        payload = {"message": str(i)} if job_type == "acme_echo" else {}
        ids.append(
            client.post(
                "/api/jobs", json={"job_type": job_type, "payload": payload}, headers=h
            ).get_json()["id"]
        )
    client.post(f"/api/jobs/{ids[0]}/cancel", headers=h)
    everything = client.get("/api/jobs", headers=h).get_json()
    assert [j["id"] for j in everything["items"]] == ids[::-1]
    assert everything["next_before_id"] is None
    echo = client.get("/api/jobs?job_type=acme_echo", headers=h).get_json()["items"]
    assert [j["id"] for j in echo] == [ids[4], ids[2], ids[0]]
    cancelled = client.get("/api/jobs?status=cancelled", headers=h).get_json()["items"]
    assert [j["id"] for j in cancelled] == [ids[0]]
    p1 = client.get("/api/jobs?limit=2", headers=h).get_json()
    assert [j["id"] for j in p1["items"]] == [ids[4], ids[3]]
    p2 = client.get(f"/api/jobs?limit=2&before_id={p1['next_before_id']}", headers=h).get_json()
    assert [j["id"] for j in p2["items"]] == [ids[2], ids[1]]
    p3 = client.get(f"/api/jobs?limit=2&before_id={p2['next_before_id']}", headers=h).get_json()
    assert [j["id"] for j in p3["items"]] == [ids[0]] and p3["next_before_id"] is None
    for bad in ("status=done", "limit=0", "limit=x", "before_id=-1", "colour=red"):
        _error(client.get(f"/api/jobs?{bad}", headers=h), 400, "Invalid query parameters")


def test_cancel_then_retry_and_conflicts(client, runtime, tenant):
    h = bearer(tenant[1])
    job_id = client.post(
        "/api/jobs", json={"job_type": "acme_echo", "payload": {"message": "x"}}, headers=h
    ).get_json()["id"]
    _error(client.post(f"/api/jobs/{job_id}/retry", headers=h), 409, "Conflict")
    r = client.post(f"/api/jobs/{job_id}/cancel", headers=h)
    assert r.status_code == 200 and r.get_json()["status"] == "cancelled"
    _error(client.post(f"/api/jobs/{job_id}/cancel", headers=h), 409)
    r = client.post(f"/api/jobs/{job_id}/retry", headers=h)
    assert r.status_code == 202 and r.get_json()["status"] == "queued"
    assert r.headers["Location"] == f"/api/jobs/{job_id}"
    with runtime.session() as s:  # a job that failed for good is retryable too
        s.get(BackgroundJob, job_id).status = "failed"
    assert client.post(f"/api/jobs/{job_id}/retry", headers=h).status_code == 202
    with runtime.session() as s:
        s.get(BackgroundJob, job_id).status = "succeeded"
    _error(client.post(f"/api/jobs/{job_id}/retry", headers=h), 409)


def test_bad_requests_are_400_with_field_errors_and_write_nothing(client, runtime, tenant):
    h = bearer(tenant[1])
    body = _error(
        client.post("/api/jobs", json={"job_type": "acme_echo", "payload": {}}, headers=h), 400
    )
    assert body["error"] == "Invalid payload"
    assert body["details"][0]["loc"] == ["message"]
    body = _error(
        client.post("/api/jobs", json={"job_type": "acme_count", "payload": {"n": -1}}, headers=h),
        400,
    )
    assert body["details"][0]["loc"] == ["n"]
    _error(client.post("/api/jobs", json={"job_type": "nope"}, headers=h), 400, "Unknown job type")
    _error(client.post("/api/jobs", json={"payload": {}}, headers=h), 400, "Invalid payload")
    _error(client.post("/api/jobs", json={"job_type": "acme_echo", "x": 1}, headers=h), 400)
    _error(client.post("/api/jobs", json={"job_type": "acme_echo", "payload": [1]}, headers=h), 400)
    _error(client.post("/api/jobs", json=[1, 2], headers=h), 400)
    _error(
        client.post("/api/jobs", data="{nope", content_type="application/json", headers=h),
        400,
        "Invalid JSON",
    )
    _error(
        client.post("/api/jobs", data="job_type=x", content_type="text/plain", headers=h),
        415,
        "Unsupported Media Type",
    )
    assert _count_jobs(runtime) == 0


def test_auth_401_and_revocation_takes_effect_on_the_next_request(client, runtime, tenant):
    from prosaas_core.tokens import revoke_token

    _, token = tenant
    assert client.get("/api/jobs", headers=bearer(token)).status_code == 200
    _error(client.get("/api/jobs"), 401, "Unauthorized")
    _error(client.get("/api/jobs", headers={"Authorization": "Basic abc"}), 401)
    _error(client.get("/api/jobs", headers=bearer("psk_wrong")), 401)
    _error(client.post("/api/jobs", json={"job_type": "acme_echo"}), 401)
    with runtime.session() as s:
        assert revoke_token(s, token) == 1
    _error(client.get("/api/jobs", headers=bearer(token)), 401)


def test_enqueue_checks_the_token_first_whatever_else_is_wrong(client, runtime, tenant):
    """POST /api/jobs looks the token up inside its INSERT; a caller without a live token is
    still answered 401 before anything its request gets wrong, and nothing is written."""
    from prosaas_core.tokens import revoke_token

    _, token = tenant
    ok = {"job_type": "acme_echo", "payload": {"message": "x"}}
    for h in (bearer("psk_wrong"), {}):
        _error(client.post("/api/jobs", json=ok, headers=h), 401, "Unauthorized")
        _error(client.post("/api/jobs", json={"job_type": "nope"}, headers=h), 401)
        _error(client.post("/api/jobs", json={"job_type": "acme_echo", "x": 1}, headers=h), 401)
        _error(client.post("/api/jobs", data="{nope", content_type="application/json",
                           headers=h), 401)  # fmt: skip
        _error(client.post("/api/jobs", data="x", content_type="text/plain", headers=h), 401)
    assert _count_jobs(runtime) == 0
    h = bearer(token)
    assert client.post("/api/jobs", json=ok, headers=h).status_code == 202
    _error(client.post("/api/jobs", json={"job_type": "nope"}, headers=h), 400)
    with runtime.session() as s:
        assert revoke_token(s, token) == 1
    _error(client.post("/api/jobs", json=ok, headers=h), 401, "Unauthorized")
    _error(client.post("/api/jobs", json={"job_type": "nope"}, headers=h), 401)
    assert _count_jobs(runtime) == 1


def test_404_405_for_missing_things_as_json(client, tenant):
    h = bearer(tenant[1])
    _error(client.get("/api/jobs/999999", headers=h), 404, "Not found")
    _error(client.post("/api/jobs/999999/cancel", headers=h), 404)
    _error(client.post("/api/jobs/999999/retry", headers=h), 404)
    _error(client.get(f"/api/jobs/{2**70}", headers=h), 404)
    _error(client.get("/api/jobs/0", headers=h), 404)
    _error(client.get("/no/such/page"), 404, "Not Found")
    body = _error(client.delete("/api/jobs", headers=h), 405, "Method Not Allowed")
    assert "POST" in body["details"]["allowed"]
    _error(client.get("/api/jobs/1/cancel", headers=h), 405)


def test_body_over_the_limit_is_413(env, runtime, tenant):
    app = create_app({**env, "PROSAAS_MAX_BODY_BYTES": "2000"})
    h = bearer(tenant[1])
    big = {"job_type": "acme_echo", "payload": {"message": "x" * 5000}}
    body = _error(app.test_client().post("/api/jobs", json=big, headers=h), 413)
    assert "2000" in body["details"]
    assert _count_jobs(runtime) == 0


def test_drift_answers_503_writes_nothing_and_logs_the_fix(client, runtime, tenant, caplog):
    with runtime.engine.begin() as conn:  # the constraint as an older deployment left it
        conn.execute(text("ALTER TABLE background_jobs DROP CONSTRAINT chk_job_type"))
        conn.execute(
            text(
                "ALTER TABLE background_jobs ADD CONSTRAINT chk_job_type "
                "CHECK (job_type IN ('acme_count'))"
            )
        )
    h = bearer(tenant[1])
    with caplog.at_level(logging.ERROR):
        r = client.post(
            "/api/jobs", json={"job_type": "acme_echo", "payload": {"message": "x"}}, headers=h
        )
    body = _error(r, 503, "Database migration required")
    assert body["details"] == "Contact administrator"
    assert _count_jobs(runtime) == 0
    assert Queue("default", connection=runtime.redis).count == 0
    lines = [rec.getMessage() for rec in caplog.records]
    assert any("acme_echo" in line and "prosaas db upgrade" in line for line in lines), lines
    ok = client.post("/api/jobs", json={"job_type": "acme_count", "payload": {"n": 1}}, headers=h)
    assert ok.status_code == 202


def test_redis_down_still_answers_202_with_the_row_committed(env, runtime, tenant, caplog):
    caplog.set_level(logging.INFO, logger="prosaas.jobs")
    closed = f"redis://127.0.0.1:{free_port()}/0"
    app = create_app({**env, "REDIS_URL": closed})
    r = app.test_client().post(
        "/api/jobs",
        json={"job_type": "acme_echo", "payload": {"message": "x"}},
        headers=bearer(tenant[1]),
    )
    assert r.status_code == 202
    job_id = r.get_json()["id"]
    with runtime.session() as s:
        assert s.get(BackgroundJob, job_id).status == "queued"
    ready = _error(app.test_client().get("/readyz"), 503, "Not ready")
    assert any("redis" in line for line in ready["details"])
    app.extensions["prosaas"].close()  # after the pusher's try
    assert f"Accepted job_id={job_id} job_type=acme_echo" in caplog.text
    assert "committed, not pushed (Redis unavailable); the sweeper pushes it" in caplog.text
    with runtime.session() as s:
        assert s.get(BackgroundJob, job_id).status == "queued"  # the sweeper's job now


def test_openapi_documents_every_route_and_job_payload_schemas(client, runtime, tenant):
    doc = client.get("/api/openapi.json").get_json()
    assert doc["openapi"] == "3.1.0"
    rules = {
        (r.rule, m)
        for r in client.application.url_map.iter_rules()
        for m in (r.methods or set()) - {"HEAD", "OPTIONS"}
        if not r.endpoint.startswith("dashboard.")  # pages for people, not the HTTP API
    }
    assert len(rules) == sum(len(ops) for ops in doc["paths"].values())
    ping = doc["paths"]["/api/acme/ping"]["get"]
    assert ping["summary"] == "Answer pong." and "security" not in ping
    enqueue = doc["paths"]["/api/jobs"]["post"]
    variants = enqueue["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    assert {v["properties"]["job_type"]["const"] for v in variants} == set(
        runtime.registry.job_types
    )
    echo = next(v for v in variants if v["title"] == "acme_echo")
    ref = echo["properties"]["payload"]["$ref"].rsplit("/", 1)[1]
    from prosaas_acme.jobs import Echo

    assert doc["components"]["schemas"][ref]["properties"] == Echo.model_json_schema()["properties"]
    assert enqueue["security"] == [{"bearerAuth": []}]
    assert doc["paths"]["/api/jobs/{job_id}"]["get"]["parameters"][0]["schema"]["type"] == "integer"
    # the documented Job shape is what the endpoint returns
    job_id = client.post(
        "/api/jobs",
        json={"job_type": "acme_echo", "payload": {"message": "x"}},
        headers=bearer(tenant[1]),
    ).get_json()["id"]
    shown = client.get(f"/api/jobs/{job_id}", headers=bearer(tenant[1])).get_json()
    assert set(shown) == set(doc["components"]["schemas"]["Job"]["properties"])


def test_metrics_and_health(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    assert client.get("/readyz").get_json()["status"] == "ready"
    text_ = client.get("/metrics").get_data(as_text=True)
    assert 'prosaas_metrics_source_up{source="database"} 1.0' in text_
    assert 'prosaas_queue_depth{queue="acme"} 0.0' in text_
