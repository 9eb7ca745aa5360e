"""Shared test fixtures for tests/ and plugins/*/tests: real databases, runtimes, the CLI.

Real servers only: PostgreSQL at $PROSAAS_TEST_PG (default postgresql://postgres@127.0.0.1:5432)
and Redis at $PROSAAS_TEST_REDIS (default redis://127.0.0.1:6379).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, text

from prosaas_core.plugins import get_plugin_manager
from prosaas_core.runtime import Runtime
from prosaas_core.settings import Settings

PG_SERVER = os.environ.get("PROSAAS_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432")
REDIS_SERVER = os.environ.get("PROSAAS_TEST_REDIS", "redis://127.0.0.1:6379")
#: Redis database the tests use (FLUSHDB'd per test); RQ and prosaas keys live there.
REDIS_DB = int(os.environ.get("PROSAAS_TEST_REDIS_DB", "9"))
PROSAAS = str(Path(sys.executable).with_name("prosaas"))
#: with PROSAAS_TEST_PG pointing at a pooler (PgBouncer), its PostgreSQL itself: databases are
#: created there and migrations use it (DATABASE_MIGRATION_URL), see tests/scale/
PG_DIRECT = os.environ.get("PROSAAS_TEST_PG_DIRECT") or None


def _admin_engine():
    return create_engine(f"{PG_DIRECT or PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")


def create_pg_database() -> str:
    """Create an empty database with a unique name; return its URL."""
    name = f"prosaas_test_{uuid.uuid4().hex[:12]}"
    engine = _admin_engine()
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return f"{PG_SERVER}/{name}"


def drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    engine = _admin_engine()
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped after the test."""
    url = create_pg_database()
    yield url
    drop_pg_database(url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'prosaas.db'}"


@pytest.fixture
def redis_url() -> Iterator[str]:
    """The test Redis database, empty at the start of the test."""
    url = f"{REDIS_SERVER}/{REDIS_DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def env(pg_url: str, redis_url: str, tmp_path: Path) -> dict[str, str]:
    """Environment for prosaas subprocesses: the test databases and short intervals."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("PROSAAS_")}
    e.update(
        DATABASE_URL=pg_url,
        REDIS_URL=redis_url,
        PROSAAS_HEARTBEAT_INTERVAL="1",
        PROSAAS_STALE_AFTER="5",
        PROSAAS_SWEEP_INTERVAL="1",
        PYTHONUNBUFFERED="1",
    )
    if PG_DIRECT:
        e["DATABASE_MIGRATION_URL"] = f"{PG_DIRECT}/{pg_url.rsplit('/', 1)[1]}"
    e.pop("RUN_MIGRATIONS", None)
    e.pop("ENABLE_SCHEDULERS", None)
    return e


@pytest.fixture
def runtime(env: dict[str, str]) -> Iterator[Runtime]:
    """A runtime over the test databases with the installed plugins, schema migrated."""
    from prosaas_core import migrate

    rt = Runtime(Settings.from_env(env), pm=get_plugin_manager(load_entrypoints=True))
    migrate.upgrade(rt)
    yield rt
    rt.close()


def run_cli(
    *args: str, env: dict[str, str], check: bool = False, timeout: float = 120, **kw
) -> subprocess.CompletedProcess:
    """Run the installed `prosaas` console script; output captured as text."""
    proc = subprocess.run(
        [PROSAAS, *args], env=env, capture_output=True, text=True, timeout=timeout, **kw
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"prosaas {' '.join(args)} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


@pytest.fixture
def cli(env: dict[str, str]):
    """`cli("db", "check")` runs the CLI against the test databases."""

    def _run(*args: str, check: bool = False, extra_env: dict | None = None, **kw):
        return run_cli(*args, env={**env, **(extra_env or {})}, check=check, **kw)

    return _run


@pytest.fixture
def business(runtime: Runtime) -> int:
    """A business id in the test database."""
    from prosaas_core.models import Business

    with runtime.session() as s:
        b = Business(name="Acme Calls")
        s.add(b)
        s.flush()
        return b.id


@pytest.fixture
def start_worker(env: dict[str, str], tmp_path: Path):
    """`start_worker("--burst", extra_env={...})` starts a real `prosaas worker` process; every
    one still running is stopped at teardown."""
    from prosaas_acme.testing import WorkerProcess

    started: list[WorkerProcess] = []

    def _start(*args: str, extra_env: dict | None = None) -> WorkerProcess:
        log = tmp_path / f"worker{len(started)}.log"
        w = WorkerProcess({**env, **(extra_env or {})}, log, *args)
        started.append(w)
        return w

    yield _start
    for w in started:
        w.stop()
