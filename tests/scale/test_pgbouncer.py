"""PgBouncer in transaction pooling mode in front of the shared PostgreSQL (Debian's
``pgbouncer``, started here on a spare port): migrations are refused through it unless
``DATABASE_MIGRATION_URL`` names PostgreSQL itself, and a slice of the worker and API tests runs
through it (``SLICE`` below).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect
from sqlalchemy.pool import NullPool

from prosaas_core.db import make_engine
from prosaas_core.migrate.pooler import transaction_pooled
from prosaas_core.testing import PG_SERVER, run_cli
from tests.scale.servers import PGBOUNCER, PgBouncer

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not os.path.exists(PGBOUNCER), reason="pgbouncer is not installed (.ci/run installs it)"
)

#: The worker and API tests run through PgBouncer: claims, fencing, retries, cancel, timeouts,
#: the sweeper (a Redis flush, a killed worker), the job context and the API's tenancy (real
#: `prosaas worker` processes in several of them). Their SQLite variants are left out. Flow
#: control runs through Sentinel in test_sentinel.py instead. Kept to what session state could
#: break, so CI stays short: test_api_jobs and test_leases pass through it too when added here.
SLICE = [
    "tests/test_worker.py",
    "tests/test_fencing.py",
    "tests/test_sweeper.py",
    "tests/test_jobs_context.py",
    "tests/test_api_tenancy.py",
]


@pytest.fixture(scope="module")
def bouncer() -> Iterator[PgBouncer]:
    server = PgBouncer().start()
    yield server
    server.close()


@pytest.fixture
def pooled(bouncer: PgBouncer, pg_url: str) -> str:
    """The test database, through PgBouncer."""
    return f"{bouncer.server()}/{pg_url.rsplit('/', 1)[1]}"


def _probe(url: str) -> bool:
    engine = make_engine(url, poolclass=NullPool)
    try:
        return transaction_pooled(engine)
    finally:
        engine.dispose()


def test_the_probe_tells_a_transaction_pooler_from_a_session(pg_url, pooled):
    assert _probe(pooled) is True
    assert _probe(pg_url) is False
    session_mode = PgBouncer(pool_mode="session").start()
    try:
        assert _probe(f"{session_mode.server()}/{pg_url.rsplit('/', 1)[1]}") is False
    finally:
        session_mode.close()


def _tables(url: str) -> list[str]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        return inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_db_upgrade_through_pgbouncer_is_refused_without_a_migration_url(env, pg_url, pooled):
    env.update(DATABASE_URL=pooled)
    env.pop("DATABASE_MIGRATION_URL", None)
    proc = run_cli("db", "upgrade", env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "transaction pooler" in lines[0] and "DATABASE_MIGRATION_URL" in lines[0]
    assert _tables(pg_url) == []  # nothing ran

    # a migration URL through the pooler as well: refused too, naming that setting
    env.update(DATABASE_MIGRATION_URL=pooled)
    proc = run_cli("db", "upgrade", env=env)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: DATABASE_MIGRATION_URL goes through a transaction")


def test_db_upgrade_with_a_direct_migration_url_works_and_the_app_runs_pooled(env, pg_url, pooled):
    env.update(DATABASE_URL=pooled, DATABASE_MIGRATION_URL=pg_url)
    run_cli("db", "upgrade", env=env, check=True)
    assert "background_jobs" in _tables(pg_url)
    # the application side (drift reads, a business, a job) goes through PgBouncer
    run_cli("db", "check", env=env, check=True)
    biz = run_cli("businesses", "create", "Acme", "--json", env=env, check=True)
    bid = re.search(r'"id":\s*(\d+)', biz.stdout).group(1)
    job = run_cli(
        "jobs", "enqueue", "delete_receipts_all", "--business", bid, "--payload", "{}",
        "--json", env=env, check=True,
    )  # fmt: skip
    jid = re.search(r'"id":\s*(\d+)', job.stdout).group(1)
    run_cli("worker", "--burst", env=env, check=True, timeout=180)
    shown = run_cli("jobs", "show", jid, "--json", env=env, check=True)
    assert '"status": "succeeded"' in shown.stdout


def test_the_worker_prepares_no_statement_through_the_pooler(env, runtime, business, pooled):
    """A worker directly connected prepares its per-job statements once per connection; through
    a transaction pooler each transaction may get another backend, so it prepares none (the
    pooler's backends, which it does not reset, would still hold them) and every job succeeds."""
    from prosaas_core.jobs import control
    from prosaas_core.jobs.enqueue import enqueue

    ids = [enqueue(runtime, "acme_echo", business, {"message": str(i)}).id for i in range(30)]
    no_services = ",".join(runtime.registry.services)
    env.update(DATABASE_URL=pooled, PROSAAS_DISABLE_SERVICES=no_services)
    run_cli("worker", "--burst", env=env, check=True, timeout=180)
    assert all(control.get_job(runtime, i)["status"] == "succeeded" for i in ids)
    engine = create_engine(pooled, poolclass=NullPool)
    try:
        with engine.connect() as conn:  # served by one of the backends the worker used
            held = conn.exec_driver_sql("SELECT name FROM pg_prepared_statements").scalars()
            assert list(held) == []
    finally:
        engine.dispose()


def test_run_migrations_at_start_up_refuses_through_pgbouncer_and_serves(
    env, pg_url, pooled, caplog
):
    from prosaas_core import create_app

    env.update(DATABASE_URL=pooled, RUN_MIGRATIONS="1")
    env.pop("DATABASE_MIGRATION_URL", None)
    with caplog.at_level("ERROR"):
        app = create_app(env)
    assert any("Migrations refused at start-up" in r.getMessage() for r in caplog.records)
    assert _tables(pg_url) == []
    app.extensions["prosaas"].close()

    env.update(DATABASE_MIGRATION_URL=pg_url)
    app = create_app(env)
    app.extensions["prosaas"].close()
    assert "background_jobs" in _tables(pg_url)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_worker_and_api_slice_passes_through_pgbouncer(bouncer: PgBouncer, tmp_path):
    """The slice's own tests, each database reached through PgBouncer, migrations direct."""
    env = dict(os.environ)
    env.update(PROSAAS_TEST_PG=bouncer.server(), PROSAAS_TEST_PG_DIRECT=PG_SERVER)
    proc = subprocess.run(
        # the SQLite variants of these tests set their own DATABASE_URL: nothing to pool there
        [
            sys.executable,
            "-m",
            "pytest",
            "-x",
            "-q",
            "-rf",
            "-p",
            "no:cacheprovider",
            "-k",
            "not sqlite",
            *SLICE,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    (tmp_path / "slice.log").write_text(proc.stdout + proc.stderr)
    summary = proc.stdout[proc.stdout.find("short test summary") :][-3000:]
    assert proc.returncode == 0, f"see {tmp_path / 'slice.log'}\n{summary}"


def test_doctor_reports_direct_or_pooled_postgresql_and_the_redis_master(cli, runtime, pooled):
    lines = cli("doctor").stdout.splitlines()
    assert "ok      database topology: direct PostgreSQL (one backend per connection)" in lines
    assert any(
        line.startswith("ok      Redis topology: direct master redis://127.0.0.1:6379/")
        for line in lines
    ), lines

    lines = cli("doctor", extra_env={"DATABASE_URL": pooled}).stdout.splitlines()
    assert "ok      database topology: pooled (a transaction pooler such as PgBouncer)" in lines
    assert any(
        line.startswith("warn    DATABASE_MIGRATION_URL is not set: `prosaas db upgrade`")
        for line in lines
    ), lines
    out = cli("doctor", extra_env={"DATABASE_URL": pooled, "DATABASE_MIGRATION_URL": pooled}).stdout
    assert "PROBLEM DATABASE_MIGRATION_URL goes through a transaction pooler too" in out
