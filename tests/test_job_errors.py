"""A failed job's error: the tenant sees its type and a safe message over HTTP, the operator
sees the traceback in `prosaas jobs show`; SQLAlchemy's background-link trailer is nowhere."""

from __future__ import annotations

from sqlalchemy import create_engine, text

from prosaas_core.api.app import create_app
from prosaas_core.jobs import control, errortext
from prosaas_core.testing import bearer, business_with_token, wait_until


def _db_error(pg_url: str) -> Exception:
    """A real DataError from PostgreSQL, raised by a statement with parameters."""
    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT CAST(:secret AS integer)"), {"secret": "s3cr3t-value"})
    except Exception as exc:
        return exc
    finally:
        engine.dispose()
    raise AssertionError("the statement should have failed")


def test_database_error_summary_hides_sql_and_parameters(pg_url):
    exc = _db_error(pg_url)
    assert "sqlalche.me" in str(exc) and "s3cr3t-value" in str(exc)  # what would leak
    stored = errortext.operator_text(exc)
    shown = errortext.tenant_error(stored)
    assert shown.startswith("DataError: invalid input syntax for type integer")
    assert "SELECT" not in shown and "secret" not in shown and "\n" not in shown
    assert "Traceback (most recent call last)" in stored  # operators keep the frames
    assert "sqlalche.me" not in stored and "Background on this error" not in stored
    assert errortext.first_line(stored) == shown


def test_old_bare_traceback_shows_only_the_type():
    stored = "Traceback (most recent call last):\n  File \"/srv/x.py\", line 1\nKeyError: 'k'\n"
    assert errortext.tenant_error(stored) == "KeyError"


def test_tenant_sees_summary_operator_sees_traceback(runtime, cli, start_worker):
    bid, token = business_with_token(runtime, "A")
    client = create_app(runtime=runtime).test_client()
    r = client.post(
        "/api/jobs",
        json={"job_type": "acme_fail", "payload": {"fail_times": 10}},
        headers=bearer(token),
    )
    assert r.status_code == 202
    job_id = r.get_json()["id"]
    w = start_worker("--burst", extra_env={"PROSAAS_RETRY_BACKOFF": "0.05"})
    assert w.wait(60) == 0, w.log()
    wait_until(lambda: control.get_job(runtime, job_id)["status"] == "failed", 10, "failure")
    shown = client.get(f"/api/jobs/{job_id}", headers=bearer(token)).get_json()
    assert shown["error"] == "RuntimeError: acme_fail failing on purpose, attempt 3"
    listed = client.get("/api/jobs", headers=bearer(token)).get_json()["items"]
    assert listed[0]["error"] == shown["error"]
    out = cli("jobs", "show", str(job_id), check=True).stdout
    assert "Traceback (most recent call last)" in out and 'File "' in out
    assert f"JOB FAILED job_id={job_id}" in w.log()
    assert "error=RuntimeError: acme_fail failing on purpose, attempt 3" in w.log()


def test_summary_is_capped():
    assert len(errortext.summary(ValueError("x" * 10_000))) <= errortext.MAX_SUMMARY
