"""`prosaas db upgrade` on the embedded default, SQLite: same end states as on PostgreSQL,
through Alembic batch mode and a file lock."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from prosaas_core.testing import PROSAAS

EXIT_LOCK_TIMEOUT = 3


@pytest.fixture
def sq(env, tmp_path: Path) -> dict:
    db = tmp_path / "prosaas.db"
    return {"env": {**env, "DATABASE_URL": f"sqlite:///{db}"}, "path": db}


def run(sq: dict, *args: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PROSAAS, *args],
        env={**sq["env"], **extra},
        capture_output=True,
        text=True,
        timeout=120,
    )


def table_sql(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'background_jobs'"
        ).fetchone()[0]


def test_upgrade_check_and_history(sq):
    assert run(sq, "db", "check").returncode == 1
    proc = run(sq, "db", "upgrade", PROSAAS_DISABLE_PLUGINS="acme")
    assert proc.returncode == 0, proc.stderr
    check = run(sq, "db", "check")
    assert check.returncode == 1
    assert (
        "job type 'acme_echo' is installed but not allowed by chk_job_type: "
        "run `prosaas db upgrade`" in check.stdout.splitlines()
    )
    proc = run(sq, "db", "upgrade")
    assert "Migration 2: updating background_jobs job_type constraint" in proc.stderr
    assert "Migration 2 complete: job_type constraint updated" in proc.stderr
    assert run(sq, "db", "check").returncode == 0
    sql = table_sql(sq["path"])
    assert "CONSTRAINT chk_job_type CHECK (job_type IN (" in sql and "'acme_echo'" in sql
    # The batch rebuild kept the other constraint and the partial unique index.
    assert "ck_background_jobs_status" in sql
    with sqlite3.connect(sq["path"]) as conn:
        (index,) = conn.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'uq_background_jobs_active_unique_key'"
        ).fetchone()
    assert "WHERE status IN ('queued', 'running')" in index


def test_removed_plugin_rows_stay_valid(sq):
    assert run(sq, "db", "upgrade").returncode == 0
    with sqlite3.connect(sq["path"]) as conn:
        conn.execute("INSERT INTO businesses (name) VALUES ('b')")
        conn.execute("INSERT INTO background_jobs (business_id, job_type) VALUES (1, 'acme_echo')")
    proc = run(sq, "db", "upgrade", PROSAAS_DISABLE_PLUGINS="acme")
    assert proc.returncode == 0, proc.stderr
    assert "'acme_echo' is not provided by any installed plugin but 1 rows use it" in proc.stderr
    with sqlite3.connect(sq["path"]) as conn:
        assert conn.execute("UPDATE background_jobs SET status = 'cancelled'").rowcount == 1
        for bad in ("acme_count", "never_installed"):
            with pytest.raises(sqlite3.IntegrityError, match="chk_job_type"):
                conn.execute(
                    "INSERT INTO background_jobs (business_id, job_type) VALUES (1, ?)", (bad,)
                )
        conn.execute("INSERT INTO background_jobs (business_id, job_type) VALUES (1, 'acme_echo')")


def test_eight_concurrent_upgrades(sq):
    procs = [
        subprocess.Popen(
            [PROSAAS, "db", "upgrade"],
            env=sq["env"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, errs
    logs = "".join(errs)
    assert logs.count("Migration 1 complete: job_type constraint updated") == 1
    assert logs.count("Running upgrade  -> 0001_core") == 1
    with sqlite3.connect(sq["path"]) as conn:
        assert conn.execute("SELECT number FROM prosaas_job_type_migrations").fetchall() == [(1,)]


def test_held_file_lock_exits_3_and_names_holder(sq):
    lock_path = Path(str(sq["path"]) + ".migrate-lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, f"pid={os.getpid()} host=test-holder\n".encode())
        proc = run(sq, "db", "upgrade", "--lock-wait", "1")
        assert proc.returncode == EXIT_LOCK_TIMEOUT, proc.stderr
        assert f"held by pid={os.getpid()} host=test-holder" in proc.stderr
    finally:
        os.close(fd)
    assert run(sq, "db", "upgrade").returncode == 0


def test_sigkill_at_random_moments_then_rerun_completes(sq):
    import random
    import signal
    import time

    rng = random.Random(11)
    for _ in range(3):
        proc = subprocess.Popen(
            [PROSAAS, "db", "upgrade"],
            env={**sq["env"], "PROSAAS_DISABLE_PLUGINS": "acme"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.6, 1.8))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    proc = run(sq, "db", "upgrade", "--lock-wait", "10")
    assert proc.returncode == 0, proc.stderr
    assert run(sq, "db", "check").returncode == 0
    with sqlite3.connect(sq["path"]) as conn:
        numbers = [n for (n,) in conn.execute("SELECT number FROM prosaas_job_type_migrations")]
    assert numbers == list(range(1, len(numbers) + 1)) and 1 <= len(numbers) <= 2
