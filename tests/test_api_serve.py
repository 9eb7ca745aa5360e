"""The API served for real: `prosaas serve` (gunicorn) answering HTTP, with a real worker."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import requests
from sqlalchemy import create_engine, inspect, text

from prosaas_core.testing import ServeProcess, bearer, business_with_token, free_port

PROSAAS = str(Path(sys.executable).with_name("prosaas"))


def _err(resp, status):
    assert resp.status_code == status, resp.text
    assert set(resp.json()) == {"error", "details"}, resp.text
    return resp.json()


def _wait_status(url, h, want, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = requests.get(url, headers=h, timeout=5).json()
        if job["status"] == want:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job never reached {want}: {job}")


def test_serve_end_to_end_with_a_worker(env, runtime, tmp_path):
    _, token = business_with_token(runtime, "A")
    h = bearer(token)
    serve_env = {**env, "PROSAAS_MAX_BODY_BYTES": "300000"}
    worker = subprocess.Popen(
        [PROSAAS, "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "worker.log", "wb"),  # noqa: SIM115
    )
    try:
        with ServeProcess(serve_env, workers=2, log_path=tmp_path / "serve.log") as srv:
            u = srv.url
            assert requests.get(u + "/healthz").json() == {"status": "ok"}
            assert requests.get(u + "/readyz").status_code == 200
            doc = requests.get(u + "/api/openapi.json").json()
            assert doc["openapi"] == "3.1.0"
            assert doc["paths"]["/api/acme/ping"]["get"]["summary"] == "Answer pong."
            assert "Echo" in doc["components"]["schemas"]
            assert requests.get(u + "/api/acme/ping").json() == {"pong": True}

            r = requests.post(
                u + "/api/jobs",
                json={"job_type": "acme_echo", "payload": {"message": "hi"}},
                headers=h,
            )
            assert r.status_code == 202
            job = _wait_status(u + r.headers["Location"], h, "succeeded")
            assert job["result"]["echo"] == "hi"
            _err(requests.post(u + f"/api/jobs/{job['id']}/cancel", headers=h), 409)
            _err(requests.post(u + f"/api/jobs/{job['id']}/retry", headers=h), 409)
            listed = requests.get(u + "/api/jobs?status=succeeded", headers=h).json()["items"]
            assert [j["id"] for j in listed] == [job["id"]]
            first = requests.post(
                u + "/api/jobs",
                json={"job_type": "acme_unique", "payload": {"seconds": 5}},
                headers=h,
            ).json()
            dup = _err(
                requests.post(u + "/api/jobs", json={"job_type": "acme_unique"}, headers=h), 409
            )
            assert dup["details"]["id"] == first["id"]
            cancelled = requests.post(u + f"/api/jobs/{first['id']}/cancel", headers=h)
            assert cancelled.status_code == 200
            _wait_status(u + f"/api/jobs/{first['id']}", h, "cancelled")
            assert requests.post(u + f"/api/jobs/{first['id']}/retry", headers=h).status_code == 202

            _err(requests.get(u + "/api/jobs"), 401)
            _err(requests.get(u + "/api/jobs", headers=bearer("psk_nope")), 401)
            _err(requests.get(u + "/api/jobs/123456", headers=h), 404)
            _err(requests.get(u + "/nowhere"), 404)
            _err(requests.delete(u + "/api/jobs", headers=h), 405)
            _err(
                requests.post(
                    u + "/api/jobs", data="x", headers={**h, "Content-Type": "text/plain"}
                ),
                415,
            )
            _err(
                requests.post(
                    u + "/api/jobs", json={"job_type": "acme_echo", "payload": {}}, headers=h
                ),
                400,
            )
            big = {"job_type": "acme_echo", "payload": {"message": "x" * 400_000}}
            _err(requests.post(u + "/api/jobs", json=big, headers=h), 413)

            lead = requests.post(u + "/api/leads", json={"phone": "+442079460018"}, headers=h)
            assert lead.status_code == 201 and lead.json()["phone"] == "+442079460018"

            def rows():  # a chunked body: no Content-Length, streamed to the server
                yield b"name,phone,email\n"
                for i in range(3000):
                    yield f"L{i},+1212555{i:04d},\n".encode()
                yield b"bad,1,\n"

            imp = requests.post(
                u + "/api/leads/import", data=rows(), headers={**h, "Content-Type": "text/csv"}
            )
            assert imp.status_code == 201, imp.text
            out = imp.json()
            assert (out["imported"], out["failed"], out["errors"][0]["line"]) == (3000, 1, 3002)
            page = requests.get(
                u + f"/api/leads?import_id={out['import_id']}&limit=10", headers=h
            ).json()
            assert len(page["items"]) == 10 and page["next_before_id"]
            files = {"file": ("l.csv", b"name,phone\nM,+12125550000\n", "text/csv")}
            assert (
                requests.post(u + "/api/leads/import", files=files, headers=h).json()["imported"]
                == 1
            )

            deadline = time.monotonic() + 15
            while True:
                metrics = requests.get(u + "/metrics")
                body = metrics.text
                if "prosaas_workers_live 1.0" in body and 'service="acme-ticker"' in body:
                    break
                assert time.monotonic() < deadline, body
                time.sleep(0.2)
            assert metrics.headers["Content-Type"].startswith("text/plain")
            assert 'prosaas_jobs{job_type="acme_echo",status="succeeded"} 1.0' in body
            assert 'prosaas_job_duration_seconds_count{job_type="acme_echo"} 1.0' in body
            assert 'prosaas_queue_depth{queue="default"}' in body
    finally:
        worker.terminate()
        worker.wait(15)


def test_serve_drift_503_and_redis_down_202(env, runtime, tmp_path):
    _, token = business_with_token(runtime, "A")
    h = bearer(token)
    with runtime.engine.begin() as conn:
        conn.execute(text("ALTER TABLE background_jobs DROP CONSTRAINT chk_job_type"))
        conn.execute(
            text(
                "ALTER TABLE background_jobs ADD CONSTRAINT chk_job_type "
                "CHECK (job_type IN ('acme_count'))"
            )
        )
    closed = f"redis://127.0.0.1:{free_port()}/0"
    log = tmp_path / "serve.log"
    with ServeProcess({**env, "REDIS_URL": closed}, log_path=log) as srv:
        r = requests.post(
            srv.url + "/api/jobs",
            json={"job_type": "acme_echo", "payload": {"message": "x"}},
            headers=h,
        )
        assert _err(r, 503)["error"] == "Database migration required"
        ok = requests.post(
            srv.url + "/api/jobs", json={"job_type": "acme_count", "payload": {"n": 1}}, headers=h
        )
        assert ok.status_code == 202  # Redis is down: the row is committed for the sweeper
        ready = _err(requests.get(srv.url + "/readyz"), 503)
        assert any("redis unreachable" in line for line in ready["details"])
        assert any("chk_job_type" in line or "db upgrade" in line for line in ready["details"])
    with runtime.engine.connect() as conn:
        rows = conn.execute(text("SELECT job_type, status FROM background_jobs")).all()
    assert rows == [("acme_count", "queued")]
    assert "acme_echo" in log.read_text() and "prosaas db upgrade" in log.read_text()


def test_serve_migrates_only_with_run_migrations(env, pg_url, tmp_path):
    with ServeProcess(env, log_path=tmp_path / "plain.log") as srv:
        not_ready = _err(requests.get(srv.url + "/readyz"), 503)
        assert not_ready["details"]
    engine = create_engine(pg_url)
    assert "background_jobs" not in inspect(engine).get_table_names()
    log = tmp_path / "migrating.log"
    with ServeProcess({**env, "RUN_MIGRATIONS": "1"}, workers=2, log_path=log) as srv:
        assert requests.get(srv.url + "/readyz").status_code == 200
    assert "background_jobs" in inspect(engine).get_table_names()
    assert log.read_text().count("MIGRATION CHECKPOINT") == 1  # once, in the master
    engine.dispose()
