"""Fixtures of the fault suite: one PostgreSQL and one Redis of its own per session (started on
spare ports, so tests may stop, freeze and restart them), a fresh database per test cloned from
a migrated template, and helpers to drive real worker processes.

Every test in this directory is marked ``slow``: ``pytest -m "not slow"`` skips the suite,
``make test`` (and CI) runs it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from sqlalchemy import text

from prosaas_core.plugins import get_plugin_manager
from prosaas_core.runtime import Runtime
from prosaas_core.settings import Settings
from tests.faults.servers import PgServer, RedisServer


def pytest_collection_modifyitems(items):
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).parent == here:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def fault_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def fault_pg(fault_redis) -> Iterator[PgServer]:
    from prosaas_core import migrate

    server = PgServer().start()
    template = server.create_database()
    rt = Runtime(
        Settings.from_env({"DATABASE_URL": server.url(template), "REDIS_URL": fault_redis.url()}),
        pm=get_plugin_manager(load_entrypoints=True),
    )
    migrate.upgrade(rt)
    rt.close()
    server.template = template
    yield server
    server.close()


@dataclass
class Fault:
    """One test's world: its database on the suite's PostgreSQL, the suite's Redis (flushed),
    an environment for worker processes with the default recovery settings, a runtime."""

    pg: PgServer
    redis: RedisServer
    db: str
    env: dict[str, str]
    rt: Runtime
    business: int
    tmp: Path
    workers: list = field(default_factory=list)

    def start_worker(self, *args: str, extra_env: dict | None = None):
        from prosaas_core.testing import WorkerProcess

        log = self.tmp / f"worker{len(self.workers)}.log"
        w = WorkerProcess({**self.env, **(extra_env or {})}, *args, log_path=log)
        self.workers.append(w)
        return w

    def enqueue(self, job_type: str, payload: dict) -> int:
        from prosaas_core.jobs.enqueue import enqueue

        return enqueue(self.rt, job_type, self.business, payload).id

    def job(self, job_id: int) -> dict[str, Any]:
        from prosaas_core.jobs import control

        return control.get_job(self.rt, job_id)

    def sql(self, statement: str, **params) -> list:
        with self.rt.engine.begin() as conn:
            res = conn.execute(text(statement), params)
            return [tuple(r) for r in res] if res.returns_rows else []

    def ticks(self, job_id: int) -> list[tuple[int, int]]:
        return self.sql(
            "SELECT item, attempt FROM acme_ticks WHERE job_id = :j ORDER BY item", j=job_id
        )

    def bulk_queued(self, n: int, *, job_type: str, queue: str, payload: str) -> list[int]:
        """`n` committed queued rows, inserted in one statement (not pushed)."""
        rows = self.sql(
            "INSERT INTO background_jobs (business_id, job_type, queue, status, payload, "
            "max_attempts, updated_at) SELECT :b, :t, :q, 'queued', CAST(:p AS jsonb), 3, "
            "now() - interval '1 hour' FROM generate_series(1, :n) RETURNING id",
            b=self.business,
            t=job_type,
            q=queue,
            p=payload,
            n=n,
        )
        return sorted(r[0] for r in rows)


@pytest.fixture
def fault(fault_pg: PgServer, fault_redis: RedisServer, tmp_path: Path) -> Iterator[Fault]:
    # a previous test may have left a server stopped or frozen
    if fault_redis.proc is None or fault_redis.proc.poll() is not None:
        fault_redis.start()
    fault_redis.thaw()
    try:
        fault_pg.sql("SELECT 1")
    except Exception:
        fault_pg.start()
    redis_lib.Redis.from_url(fault_redis.url()).flushall()
    db = fault_pg.create_database(template=fault_pg.template)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROSAAS_")}
    for key in ("RUN_MIGRATIONS", "ENABLE_SCHEDULERS"):
        env.pop(key, None)
    # the default recovery settings (lease, sweep interval, stale period) are what is tested
    env.update(
        DATABASE_URL=fault_pg.url(db),
        REDIS_URL=fault_redis.url(),
        PYTHONUNBUFFERED="1",
        PROSAAS_DISABLE_SERVICES="acme-ticker,recording-worker",
    )
    rt = Runtime(Settings.from_env(env), pm=get_plugin_manager(load_entrypoints=True))
    from prosaas_core.db import make_engine
    from prosaas_core.models import Business

    # the test's own reads survive the restarts it causes
    rt.__dict__["engine"] = make_engine(env["DATABASE_URL"], pool_pre_ping=True)

    with rt.session() as s:
        b = Business(name="Faults Inc")
        s.add(b)
        s.flush()
        business = b.id
    f = Fault(fault_pg, fault_redis, db, env, rt, business, tmp_path)
    yield f
    for w in f.workers:
        w.kill()
    rt.close()
    try:
        fault_pg.sql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    except Exception:
        pass
