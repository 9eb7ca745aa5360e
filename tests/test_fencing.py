"""The fence: once the sweeper rescued a job from a stale attempt and another attempt claimed
it, every write of the old attempt (touch, checkpoint, finish, requeue) is refused and changes
nothing, on the worker's driver-cursor path (PostgreSQL) and the Core path (SQLite)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from prosaas_core import migrate
from prosaas_core.jobs import store, sweeper
from prosaas_core.jobs.enqueue import enqueue
from prosaas_core.models import BackgroundJob, Business
from prosaas_core.plugins import get_plugin_manager
from prosaas_core.runtime import Runtime
from prosaas_core.settings import Settings

T = BackgroundJob.__table__


@pytest.fixture(params=["postgresql", "sqlite"])
def rt(request, env, sqlite_url) -> Iterator[Runtime]:
    settings_env = dict(env)
    if request.param == "sqlite":
        settings_env["DATABASE_URL"] = sqlite_url
    rt = Runtime(Settings.from_env(settings_env), pm=get_plugin_manager(load_entrypoints=True))
    migrate.upgrade(rt)
    yield rt
    rt.close()


@contextmanager
def writer(rt: Runtime) -> Iterator[Any]:
    """What the worker writes through: a driver cursor on PostgreSQL, a Core connection else."""
    if rt.engine.dialect.name == "postgresql":
        from prosaas_core.db import autocommit_cursor

        with autocommit_cursor(rt.engine) as cur:
            yield cur
    else:
        with rt.engine.begin() as conn:
            yield conn


def row(rt: Runtime, job_id: int) -> dict[str, Any]:
    with rt.engine.connect() as conn:
        return dict(conn.execute(select(T).where(T.c.id == job_id)).mappings().one())


def test_stale_attempt_is_fenced_out_of_every_write(rt):
    with rt.session() as s:
        s.add(b := Business(name="Fence"))
        s.flush()
        business_id = b.id
    job_id = enqueue(rt, "acme_echo", business_id, {"message": "x"}).id
    with writer(rt) as w:
        old = store.claim(w, job_id, "worker-old")
    assert old is not None
    # the old worker stops heartbeating: its attempt goes stale and the sweeper rescues it
    with rt.engine.begin() as conn:
        conn.execute(
            update(T)
            .where(T.c.id == job_id)
            .values(heartbeat_at=store.utcnow() - timedelta(seconds=rt.settings.stale_after + 60))
        )
    assert job_id in sweeper.sweep(rt).rescued
    with writer(rt) as w:
        new = store.claim(w, job_id, "worker-new")
    assert new is not None and new.fence > old.fence
    with writer(rt) as w:
        assert store.touch(w, job_id, new.fence, processed=1) is False  # the new attempt writes
    before = row(rt, job_id)
    assert (before["status"], before["worker"]) == ("running", "worker-new")

    with writer(rt) as w:
        assert store.touch(w, job_id, old.fence, processed=99) is None
        assert store.touch(w, job_id, old.fence, state={"at": 99}, set_state=True) is None
        assert store.finish(w, job_id, old.fence, "succeeded", result={"old": True}) is False
        assert store.finish(w, job_id, old.fence, "failed", error="old attempt") is False
        assert store.requeue(w, job_id, old.fence, delay=5, error="old retry") is False
        assert store.requeue(w, job_id, old.fence, refund_attempt=True) is False
    assert row(rt, job_id) == before

    with writer(rt) as w:
        assert store.finish(w, job_id, new.fence, "succeeded", result={"new": True}) is True
    after = row(rt, job_id)
    assert (after["status"], after["result"], after["processed"]) == (
        "succeeded",
        {"new": True},
        1,
    )
