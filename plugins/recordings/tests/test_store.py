"""The one-statement claim and completion on the real PostgreSQL (autocommit connections)."""

from __future__ import annotations

from prosaas_recordings import store
from prosaas_recordings.tables import calls, recording_tasks
from prosaas_recordings.testing import call_sid, make_call, recording_sid
from sqlalchemy import select

from prosaas_core.models import Business
from prosaas_core.store import connect


def _seed(runtime, per_business: dict[int, int]) -> None:
    n = 0
    with runtime.session() as s:
        for biz, count in per_business.items():
            for _ in range(count):
                n += 1
                store.create_task(
                    s,
                    business_id=biz,
                    call_sid=call_sid(n),
                    recording_sid=recording_sid(n),
                    recording_url=f"https://api.twilio.com/rec/{n}",
                    duration=n,
                )


def _businesses(runtime, k: int) -> list[int]:
    with runtime.session() as s:
        rows = [Business(name=f"b{i}") for i in range(k)]
        s.add_all(rows)
        s.flush()
        return [b.id for b in rows]


def _claim(runtime, **kw) -> list[store.Task]:
    with connect(runtime.engine) as conn:
        return store.claim_due(conn, worker="w1", lease=30, **kw)


def test_claim_is_round_robin_capped_per_business_and_minus_what_is_held(runtime):
    a, b, c = _businesses(runtime, 3)
    _seed(runtime, {a: 5, b: 5, c: 1})
    got = _claim(runtime, quota={a: 1, b: 3}, per_business=3, limit=10)
    # a: 3 - 1 held = 2; b: full (3 held); c: its only task; oldest of each business first
    assert [t.business_id for t in got] == [a, c, a]
    assert all(t.attempts == 1 and t.fence == 1 for t in got)
    again = _claim(runtime, quota={}, per_business=3, limit=2)
    assert [t.business_id for t in again] == [a, b]  # the next oldest; none claimed twice
    assert not {t.id for t in got} & {t.id for t in again}


def test_claim_takes_nothing_already_running_and_respects_the_limit(runtime):
    (a,) = _businesses(runtime, 1)
    _seed(runtime, {a: 4})
    first = _claim(runtime, quota={}, per_business=10, limit=3)
    second = _claim(runtime, quota={}, per_business=10, limit=3)
    assert len(first) == 3 and len(second) == 1
    assert not {t.id for t in first} & {t.id for t in second}
    with runtime.session() as s:
        rows = s.execute(select(recording_tasks.c.status, recording_tasks.c.worker)).all()
    assert {tuple(r) for r in rows} == {("running", "w1")}


def test_complete_updates_task_and_call_in_one_statement_and_is_fenced(runtime):
    (a,) = _businesses(runtime, 1)
    make_call(runtime, a, call_sid(1))
    _seed(runtime, {a: 1})
    [task] = _claim(runtime, quota={}, per_business=3, limit=5)
    stale = store.Task(**{**task.__dict__, "fence": task.fence - 1})
    with connect(runtime.engine) as conn:
        assert store.complete(conn, stale, path="/x/old.mp3", size=1) is False
        assert store.complete(conn, task, path="/x/CA.mp3", size=123) is True
        assert store.complete(conn, task, path="/x/again.mp3", size=9) is False  # done already
    with runtime.session() as s:
        t = s.execute(select(recording_tasks)).one()
        call = s.execute(select(calls).where(calls.c.call_sid == call_sid(1))).one()
    assert (t.status, t.file_path, t.bytes) == ("done", "/x/CA.mp3", 123)
    assert (call.recording_status, call.recording_path, call.recording_bytes) == (
        "downloaded",
        "/x/CA.mp3",
        123,
    )
    assert call.recording_sid == recording_sid(1) and call.recording_duration == 1


def test_renew_reports_the_tasks_no_longer_held(runtime):
    (a,) = _businesses(runtime, 1)
    _seed(runtime, {a: 2})
    t1, t2 = _claim(runtime, quota={}, per_business=3, limit=5)
    with connect(runtime.engine) as conn:
        store.put_back(conn, t2)
        assert store.renew(conn, [t1, t2], lease=30) == {t2.id}
