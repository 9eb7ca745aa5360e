"""One claiming algorithm on both databases: the same named queries, the same answers on
PostgreSQL and SQLite (round-robin, per-business quota less what is held, fencing)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prosaas_recordings import store
from prosaas_recordings.tables import calls, recording_tasks
from prosaas_recordings.testing import call_sid, make_call, recording_sid
from sqlalchemy import select

from prosaas_core import Runtime, ServiceContext, Settings
from prosaas_core.models import Business
from prosaas_core.plugins import get_plugin_manager
from prosaas_core.testing import upgrade


@pytest.fixture(params=["postgresql", "sqlite"])
def rt(request, env, sqlite_url) -> Iterator[Runtime]:
    if request.param == "postgresql":
        yield request.getfixturevalue("runtime")
        return
    rt = Runtime(Settings.from_env({**env, "DATABASE_URL": sqlite_url}), pm=get_plugin_manager())
    upgrade(rt)
    yield rt
    rt.close()


@pytest.fixture
def ctx(rt) -> ServiceContext:
    import logging
    import threading

    return ServiceContext("recording-worker", threading.Event(), rt, logging.getLogger("t"))


def _seed(rt: Runtime, per_business: dict[int, int]) -> None:
    owners = [biz for biz, count in per_business.items() for _ in range(count)]
    for n, biz in enumerate(owners, 1):
        make_call(rt, biz, call_sid(n))
    with rt.session() as s:
        for n, biz in enumerate(owners, 1):
            store.create_task(
                s,
                business_id=biz,
                call_sid=call_sid(n),
                recording_sid=recording_sid(n),
                recording_url=f"https://api.twilio.com/rec/{n}",
                duration=n,
            )


def _businesses(rt: Runtime, k: int) -> list[int]:
    with rt.session() as s:
        rows = [Business(name=f"b{i}") for i in range(k)]
        s.add_all(rows)
        s.flush()
        return [b.id for b in rows]


def test_claim_fence_and_give_back_alike_on_both_databases(rt, ctx):
    a, b, c = _businesses(rt, 3)
    _seed(rt, {a: 5, b: 5, c: 1})
    with ctx.db() as db:
        assert store.count_due(db) == 11
        got = store.claim_due(
            db, quota={a: 1, b: 3}, per_business=3, limit=10, worker="w1", lease=30
        )
        # a: 3 - 1 held = 2; b: full; c: its only task; the oldest of each business first
        assert [t.business_id for t in got] == [a, c, a]
        assert all(t.attempts == 1 and t.fence == 1 for t in got)
        again = store.claim_due(db, quota={}, per_business=3, limit=2, worker="w2", lease=30)
        assert [t.business_id for t in again] == [a, b]
        assert not {t.id for t in got} & {t.id for t in again}
        assert store.count_due(db) == 6

        first, second, third = got
        stale = store.Task(**{**first.__dict__, "fence": first.fence - 1})
        assert store.complete(db, stale, path="/x/old.mp3", size=1) is False
        assert store.complete(db, first, path="/x/a.mp3", size=10) is True
        assert store.complete(db, first, path="/x/again.mp3", size=9) is False
        assert store.fail(db, stale, error="old") is False
        assert store.fail(db, second, error="gone") is True
        assert store.put_back(db, third) is True
        assert store.renew(db, [first, second, third, *again], lease=30) == {
            first.id,
            second.id,
            third.id,
        }
    with rt.session() as s:
        rows = {r.id: r for r in s.execute(select(recording_tasks))}
        by_sid = {r.call_sid: r for r in s.execute(select(calls))}
    assert (rows[first.id].status, rows[first.id].file_path) == ("done", "/x/a.mp3")
    assert (rows[second.id].status, rows[second.id].last_error) == ("failed", "gone")
    assert (rows[third.id].status, rows[third.id].attempts) == ("queued", 0)
    done_call, failed_call = by_sid[first.call_sid], by_sid[second.call_sid]
    assert (done_call.recording_status, done_call.recording_bytes) == ("downloaded", 10)
    assert (failed_call.recording_status, failed_call.recording_error) == ("failed", "gone")
    assert by_sid[third.call_sid].recording_status is None  # a stale write touched no call
