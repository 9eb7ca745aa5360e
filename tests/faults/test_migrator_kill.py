"""A migrator SIGKILLed at each step of `prosaas db upgrade` leaves no lock behind, and the next
run completes the schema and the constraint."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from prosaas_core.testing import PROSAAS

STEPS = [
    "Acquired migration lock",
    "Running upgrade  -> 0001_core",
    "Running upgrade  -> a001_acme",
    "Schema upgraded",
    "Migration 1: updating background_jobs job_type constraint",
    "Validating chk_job_type",
    "Migration 1 complete",
]


@pytest.mark.parametrize("step", STEPS)
def test_sigkill_at_each_step_then_rerun_completes(fault_pg, fault_redis, step):
    db = fault_pg.create_database()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROSAAS_")}
    env.update(DATABASE_URL=fault_pg.url(db), REDIS_URL=fault_redis.url(), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [PROSAAS, "db", "upgrade"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if step in line:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(30)
    assert any(step in line for line in seen), "".join(seen)
    # a killed session's advisory lock goes with its connection
    locks = fault_pg.sql(
        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
        "WHERE l.locktype = 'advisory' AND d.datname = :d",
        {"d": db},
    )
    assert locks == [(0,)]
    again = subprocess.run(
        [PROSAAS, "db", "upgrade"], env=env, capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0, again.stdout + again.stderr
    check = subprocess.run([PROSAAS, "db", "check"], env=env, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    fault_pg.sql(f'DROP DATABASE "{db}" WITH (FORCE)')
