"""README and runbook promises that had no test: the API with RUN_MIGRATIONS=1 while another
process holds the migration lock skips and serves; `prosaas doctor` reports chk_job_type drift;
`jobs watch` exit codes; the demo uses a real Redis when one answers."""

from __future__ import annotations

import re

import requests
from sqlalchemy import create_engine, text

from prosaas_core.jobs.enqueue import enqueue
from prosaas_core.migrate.lock import lock_key
from prosaas_core.testing import ServeProcess


def test_api_with_run_migrations_skips_a_held_lock_and_serves(env, runtime, tmp_path):
    holder = create_engine(env["DATABASE_URL"], connect_args={"application_name": "other-migrator"})
    with holder.connect() as conn:
        db = conn.execute(text("SELECT current_database()")).scalar()
        assert conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": lock_key(db)}).scalar()
        conn.commit()
        serve_env = {**env, "RUN_MIGRATIONS": "1", "PROSAAS_MIGRATION_LOCK_WAIT": "1"}
        log = tmp_path / "serve.log"
        with ServeProcess(serve_env, log_path=log) as srv:
            assert requests.get(srv.url + "/healthz", timeout=10).status_code == 200
            assert requests.get(srv.url + "/readyz", timeout=10).status_code == 200
        out = log.read_text()
        assert "RUN_MIGRATIONS=1" in out
        assert re.search(r"Migrations skipped|Skipping migrations", out), out[-3000:]
        assert "Traceback" not in out
    holder.dispose()


def test_doctor_reports_chk_job_type_drift(env, cli):
    # the schema migrated without the acme plugin: its job types are not in chk_job_type
    cli("db", "upgrade", extra_env={"PROSAAS_DISABLE_PLUGINS": "acme"}, check=True)
    res = cli("doctor")
    assert res.returncode != 0
    assert (
        "PROBLEM job type 'acme_echo' is installed but not allowed by chk_job_type: "
        "run `prosaas db upgrade`" in res.stdout
    ), res.stdout
    cli("db", "upgrade", check=True)
    assert "chk_job_type in sync" in cli("doctor").stdout


def test_jobs_watch_exit_codes(cli, runtime, business, start_worker):
    cancelled = enqueue(runtime, "acme_echo", business, {"message": "never"})
    cli("jobs", "cancel", str(cancelled.id), check=True)
    res = cli("jobs", "watch", str(cancelled.id), "--interval", "0.1")
    assert res.returncode == 2 and "cancelled" in res.stderr
    stuck = enqueue(runtime, "acme_echo", business, {"message": "no worker yet"})
    res = cli("jobs", "watch", str(stuck.id), "--interval", "0.1", "--timeout", "0.5")
    assert res.returncode == 3 and "still queued after 0.5s" in res.stderr
    res = cli("jobs", "watch", "999999999")
    assert res.returncode == 1 and res.stderr.startswith("error:")
    failing = enqueue(runtime, "acme_fail", business, {"fail_times": 10})
    start_worker(extra_env={"PROSAAS_RETRY_BACKOFF": "0.05"})
    res = cli("jobs", "watch", str(failing.id), "--interval", "0.1", "--timeout", "60")
    assert res.returncode == 1
    assert f"job {failing.id} failed: RuntimeError: acme_fail failing on purpose" in res.stderr
    res = cli("jobs", "watch", str(stuck.id), "--interval", "0.1", "--timeout", "60")
    assert res.returncode == 0 and "succeeded" in res.stdout
