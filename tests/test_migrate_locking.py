"""`prosaas db upgrade` under contention, on real PostgreSQL: the advisory lock, timeouts,
retried DDL and killed migrators."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from prosaas_core import migrate
from prosaas_core.migrate import constraint as ck
from prosaas_core.migrate.alembic_ops import missing_heads
from prosaas_core.migrate.lock import lock_key
from prosaas_core.runtime import Runtime
from prosaas_core.settings import Settings
from prosaas_core.testing import PROSAAS

EXIT_LOCK_TIMEOUT = 3


@pytest.fixture
def admin(pg_url):
    """An engine on the test database for the test's own sessions."""
    # NullPool: a closed session really ends, releasing its session-level advisory locks.
    engine = create_engine(
        pg_url, poolclass=NullPool, connect_args={"application_name": "lock-holder-test"}
    )
    yield engine
    engine.dispose()


def popen(env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [PROSAAS, "db", "upgrade", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def upgrade_in_process(env: dict, **extra: str) -> None:
    """Set-up that is not under test: migrate without paying for a process start."""
    rt = Runtime(Settings.from_env({**env, **extra}))
    try:
        migrate.upgrade(rt)
    finally:
        rt.close()


def advisory_holders(engine) -> list[int]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
                    " AND database = (SELECT oid FROM pg_database"
                    " WHERE datname = current_database())"
                )
            ).scalars()
        )


def history_numbers(engine) -> list[int]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                text("SELECT number FROM prosaas_job_type_migrations ORDER BY number")
            ).scalars()
        )


def allowed(engine) -> tuple[set[str], bool]:
    with engine.connect() as conn:
        state = ck.read_state(conn)
    return set(state.allowed or ()), state.validated


def test_eight_concurrent_upgrades_apply_each_migration_once(env, admin):
    procs = [popen(env) for _ in range(8)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    logs = "".join(err for _out, err in outs)
    assert logs.count("Running upgrade  -> 0001_core") == 1
    assert logs.count("Migration 1: updating background_jobs job_type constraint") == 1
    assert logs.count("Migration 1 complete: job_type constraint updated") == 1
    assert logs.count("Acquired migration lock") == 8
    assert logs.count("Released migration lock") == 8
    assert "Migration 2" not in logs
    assert history_numbers(admin) == [1]
    with admin.connect() as conn:
        versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    dirs = Runtime(Settings.from_env(env)).registry.migration_dirs()
    assert len(versions) == len(set(versions)) and missing_heads(set(versions), dirs) == []
    assert advisory_holders(admin) == []
    print("\n".join(ln for ln in logs.splitlines() if "migration lock" in ln))


def test_held_lock_waits_logs_holder_and_exits_3(env, admin, cli):
    with admin.connect() as holder:
        db = holder.execute(text("SELECT current_database()")).scalar()
        holder_pid = holder.execute(text("SELECT pg_backend_pid()")).scalar()
        assert holder.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": lock_key(db)}).scalar()
        holder.commit()
        lock_wait = 2
        started = time.monotonic()
        proc = cli("db", "upgrade", "--lock-wait", str(lock_wait))
        elapsed = time.monotonic() - started
        assert proc.returncode == EXIT_LOCK_TIMEOUT, proc.stderr
        # waited the whole lock wait, then gave up (start-up of the CLI on a busy machine on top)
        assert lock_wait <= elapsed < lock_wait + 30
        assert "Waiting for migration lock" in proc.stderr
        assert f"pid={holder_pid} application_name='lock-holder-test'" in proc.stderr
        error = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
        assert len(error) == 1 and "could not acquire the migration lock within 2s" in error[0]
        assert "Acquired migration lock" not in proc.stderr

        # A fresh schema is not "what this code needs": --skip-if-locked still fails, clearly.
        proc = cli("db", "upgrade", "--lock-wait", "1", "--skip-if-locked")
        assert proc.returncode == EXIT_LOCK_TIMEOUT
        assert "schema is behind this code" in proc.stderr
    # Lock released with the holder's session: upgrade runs.
    upgrade_in_process(env)
    with admin.connect() as holder:
        holder.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": lock_key(db)})
        holder.commit()
        proc = cli("db", "upgrade", "--lock-wait", "1", "--skip-if-locked")
        assert proc.returncode == 0, proc.stderr
        assert "Skipping migrations" in proc.stderr and "skipped" in proc.stdout
        holder.execute(text("SELECT pg_advisory_unlock_all()"))
        holder.commit()


def test_waiter_proceeds_when_the_holder_releases(env, admin):
    with admin.connect() as holder:
        db = holder.execute(text("SELECT current_database()")).scalar()
        holder.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": lock_key(db)})
        holder.commit()
        proc = popen(env, "--lock-wait", "60")
        lines: list[str] = []
        _wait_for_line(proc, "Waiting for migration lock", 60, lines)
        time.sleep(1)
        assert proc.poll() is None  # still waiting
        holder.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": lock_key(db)})
        holder.commit()
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Migration 1 complete" in err


def _wait_for_line(proc: subprocess.Popen, needle: str, timeout: float, sink: list) -> None:
    """Read proc's stderr into `sink` until `needle` appears."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        sink.append(line)
        if needle in line:
            return
    raise AssertionError(f"{needle!r} not seen; stderr so far:\n{''.join(sink)}")


def test_sigkill_while_retrying_ddl_leaves_nothing_locked(env, admin, cli):
    upgrade_in_process(env, PROSAAS_DISABLE_PLUGINS="acme")
    with admin.connect() as blocker:
        blocker.execute(text("SELECT count(*) FROM background_jobs"))  # ACCESS SHARE, held
        proc = popen({**env, "PROSAAS_MIGRATION_LOCK_TIMEOUT_MS": "100"})
        _wait_for_line(proc, "lock timeout on attempt", 60, [])
        assert advisory_holders(admin) != []
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 10
        while advisory_holders(admin) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert advisory_holders(admin) == []
        blocker.rollback()
    assert "acme_echo" not in allowed(admin)[0]
    proc = cli("db", "upgrade", "--lock-wait", "5", check=True)
    assert "Migration 2 complete" in proc.stderr
    assert cli("db", "check").returncode == 0
    assert history_numbers(admin) == [1, 2]
    assert "acme_echo" in allowed(admin)[0]


def test_sigkill_at_random_moments_then_rerun_completes(env, admin, cli):
    rng = random.Random(int(os.environ.get("PROSAAS_TEST_SEED", "7")))
    for _ in range(4):
        proc = popen(env)
        time.sleep(rng.uniform(0.6, 1.8))  # import, lock, Alembic, constraint: somewhere in there
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    cli("db", "upgrade", "--lock-wait", "15", check=True)
    assert cli("db", "check").returncode == 0
    numbers = history_numbers(admin)
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) == 1
    assert allowed(admin)[1] is True
    assert advisory_holders(admin) == []


def test_long_transaction_ddl_retries_and_writers_are_not_queued(env, admin, cli):
    """A transaction holding a lock on background_jobs: the constraint DDL gives up after
    lock_timeout and retries, so INSERTs queue behind it for at most about that long."""
    upgrade_in_process(env)
    with admin.begin() as conn:
        bid = conn.execute(text("INSERT INTO businesses (name) VALUES ('b') RETURNING id")).scalar()
        conn.execute(
            text("INSERT INTO background_jobs (business_id, job_type) VALUES (:b, 'acme_echo')"),
            {"b": bid},
        )
    waits: list[float] = []
    stop = threading.Event()

    def writer() -> None:
        with admin.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            while not stop.is_set():
                t0 = time.monotonic()
                conn.execute(
                    text(
                        "INSERT INTO background_jobs (business_id, job_type)"
                        " VALUES (:b, 'acme_echo')"
                    ),
                    {"b": bid},
                )
                waits.append(time.monotonic() - t0)
                time.sleep(0.005)

    lock_timeout_ms = 200
    thread = threading.Thread(target=writer)
    with admin.connect() as blocker:
        blocker.execute(text("SELECT count(*) FROM background_jobs"))  # ACCESS SHARE, held
        block_started = time.monotonic()
        thread.start()
        # Removing acme: its unused types leave the constraint (a change), acme_echo stays.
        proc = popen(
            {
                **env,
                "PROSAAS_DISABLE_PLUGINS": "acme",
                "PROSAAS_MIGRATION_LOCK_TIMEOUT_MS": str(lock_timeout_ms),
            }
        )
        lines: list[str] = []
        _wait_for_line(proc, "lock timeout on attempt 3", 60, lines)
        blocked_for = 1.0
        time.sleep(blocked_for)
        blocker.rollback()
        held = time.monotonic() - block_started
    _out, err = proc.communicate(timeout=60)
    stop.set()
    thread.join(10)
    err = "".join(lines) + err
    assert proc.returncode == 0, err
    assert "Migration 2 complete: job_type constraint updated" in err
    assert "'acme_echo' is not provided by any installed plugin but" in err
    assert len(waits) > 20
    # A writer waits behind one DDL attempt (about lock_timeout), never behind the blocker's
    # whole hold (at least three lock timeouts and a second): bounded by both, with a margin
    # for a busy machine rather than a tight constant.
    assert held > 3 * lock_timeout_ms / 1000 + blocked_for
    assert max(waits) < min(0.75 * held, lock_timeout_ms / 1000 + 1.0), (max(waits), held)
    assert allowed(admin) == ({*allowed(admin)[0]} | {"acme_echo"}, True)
    assert "acme_count" not in allowed(admin)[0]


def test_upgrade_with_nothing_to_do_takes_no_lock_on_background_jobs(env, admin, cli):
    upgrade_in_process(env)
    with admin.connect() as blocker:
        blocker.execute(text("LOCK TABLE background_jobs IN ACCESS EXCLUSIVE MODE"))
        started = time.monotonic()
        proc = cli(
            "db",
            "upgrade",
            extra_env={
                "PROSAAS_MIGRATION_DDL_BUDGET": "1",
                "PROSAAS_MIGRATION_LOCK_TIMEOUT_MS": "100",
            },
        )
        assert proc.returncode == 0, proc.stderr
        assert "chk_job_type is up to date" in proc.stderr and "lock timeout" not in proc.stderr
        assert cli("db", "check").returncode == 0  # drift reads catalogs only
        assert time.monotonic() - started < 20
        blocker.rollback()


def test_busy_table_past_the_ddl_budget_exits_4(env, admin, cli):
    upgrade_in_process(env, PROSAAS_DISABLE_PLUGINS="acme")
    with admin.connect() as blocker:
        blocker.execute(text("SELECT count(*) FROM background_jobs"))
        proc = cli(
            "db",
            "upgrade",
            extra_env={
                "PROSAAS_MIGRATION_DDL_BUDGET": "1.5",
                "PROSAAS_MIGRATION_LOCK_TIMEOUT_MS": "100",
            },
        )
        blocker.rollback()
    assert proc.returncode == 4, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: Migration 2:")
    assert advisory_holders(admin) == []
    assert cli("db", "upgrade").returncode == 0


def test_the_swap_holds_writers_only_inside_one_message_with_its_history_row(env, admin):
    """The lock-taking ALTER and the COMMIT reach the server as one message: once the ALTER
    has its ACCESS EXCLUSIVE lock, no client round trip is left before the commit. Seen from
    pg_stat_activity while the ALTER waits behind a reader; the history row, written before
    it in the same transaction, is not visible until the swap commits, and the comment read
    without locking matches the new constraint afterwards."""
    upgrade_in_process(env)
    before = history_numbers(admin)
    result: list = []
    with admin.connect() as blocker:
        blocker.execute(text("SELECT count(*) FROM background_jobs"))  # ACCESS SHARE, held
        thread = threading.Thread(
            target=lambda: result.append(
                upgrade_in_process(
                    env, PROSAAS_DISABLE_PLUGINS="acme", PROSAAS_MIGRATION_LOCK_TIMEOUT_MS="20000"
                )
            )
        )
        thread.start()
        deadline = time.monotonic() + 30
        waiting = None
        while waiting is None and time.monotonic() < deadline:
            with admin.connect() as conn:
                waiting = conn.execute(
                    text(
                        "SELECT query FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND application_name = 'prosaas-migrate'"
                        " AND datname = current_database()"
                    )
                ).scalar()
            time.sleep(0.02)
        assert waiting is not None, "the swap never waited for its lock"
        assert history_numbers(admin) == before  # same transaction: not visible yet
        blocker.rollback()
    thread.join(60)
    statements = [s.strip().split()[:2] for s in waiting.split(";") if s.strip()]
    assert statements == [["ALTER", "TABLE"], ["COMMIT"]], waiting
    assert history_numbers(admin) == [*before, before[-1] + 1]
    with admin.connect() as conn:
        state = ck.read_state(conn)
    assert state.annotated and state.validated and "acme_count" not in (state.allowed or ())
