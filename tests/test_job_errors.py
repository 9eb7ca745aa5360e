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


def test_a_nul_character_in_the_error_or_the_result_is_stored_as_a_failure(
    runtime, business, start_worker
):
    """PostgreSQL text and jsonb cannot hold NUL: an exception message carrying one is stored
    with it escaped, and a result carrying one fails the attempt with a clear error; neither
    leaves the job running with no outcome."""
    from prosaas_core.jobs.enqueue import enqueue

    erred = enqueue(runtime, "acme_fail", business, {"fail_times": 10, "nul": True}).id
    returned = enqueue(runtime, "acme_fail", business, {"fail_times": 0, "nul": True}).id
    w = start_worker("--burst", extra_env={"PROSAAS_RETRY_BACKOFF": "0.05"})
    assert w.wait(60) == 0, w.log()
    wait_until(
        lambda: {control.get_job(runtime, j)["status"] for j in (erred, returned)} == {"failed"},
        20,
        "both jobs to fail",
    )
    got = control.get_job(runtime, erred)
    assert got["attempts"] == 3
    assert errortext.first_line(got["error"]) == (
        "RuntimeError: acme_fail failing on purpose\\x00, attempt 3"
    )
    got = control.get_job(runtime, returned)
    assert got["attempts"] == 3 and "NUL character" in errortext.first_line(got["error"]), got
    assert "failed outside the handler" not in w.log()


def test_an_outcome_postgresql_refuses_is_handed_back_not_left_running(
    runtime, business, start_worker
):
    """A write of the outcome that PostgreSQL refuses (here a CHECK an operator added): the
    worker hands the row back at once, the attempt counted, so it neither sits running under
    the worker's live lease nor loops; it ends failed, saying why."""
    from prosaas_core.jobs.enqueue import enqueue

    with runtime.engine.begin() as conn:
        conn.execute(
            text(
                "ALTER TABLE background_jobs ADD CONSTRAINT chk_test_no_purpose "
                "CHECK (error IS NULL OR error NOT LIKE '%on purpose%')"
            )
        )
    job = enqueue(runtime, "acme_fail", business, {"fail_times": 10}).id
    w = start_worker("--queues", "default", extra_env={"PROSAAS_RETRY_BACKOFF": "0.05"})
    wait_until(lambda: control.get_job(runtime, job)["status"] == "failed", 30, "the job to fail")
    got = control.get_job(runtime, job)
    assert got["attempts"] == 3, got
    assert got["error"].startswith("worker lost: its outcome was refused"), got
    assert w.log().count(f"JOB RESCUED job_id={job}: its outcome could not be recorded") == 2
