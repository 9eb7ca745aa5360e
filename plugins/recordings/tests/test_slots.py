"""Per-business slots on the real Redis: the limit, ownership by token, expiry of dead holders."""

from __future__ import annotations

import time

import pytest
import redis
from prosaas_recordings.slots import SlotManager


@pytest.fixture
def r(redis_url):
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def test_limit_is_shared_by_managers(r):
    a, b = SlotManager(r, limit=3, ttl=5), SlotManager(r, limit=3, ttl=5)
    held = [a.acquire(7), b.acquire(7), a.acquire(7)]
    assert all(held) and [s.active for s in held] == [1, 2, 3]
    assert b.acquire(7) is None and a.acquire(7) is None
    assert a.acquire(8) is not None  # another business has its own slots
    assert b.release(held[0]) == (True, 2)
    assert b.acquire(7) is not None


def test_a_stale_token_never_releases_someone_elses_slot(r):
    m = SlotManager(r, limit=1, ttl=0.3)
    old = m.acquire(1)
    time.sleep(0.4)  # the holder died or stalled: its lease ran out
    new = m.acquire(1)
    assert new is not None
    assert m.renew(old) is False
    assert m.release(old) == (False, 1)  # nothing of the new holder's is touched
    assert m.active(1) == 1 and m.acquire(1) is None
    assert m.renew(new) is True
    assert m.release(new) == (True, 0)


def test_dead_holders_slot_comes_back_within_the_lease(r):
    m = SlotManager(r, limit=2, ttl=0.5)
    assert m.acquire(3) and m.acquire(3)
    assert m.acquire(3) is None
    started = time.monotonic()
    while m.acquire(3) is None:
        time.sleep(0.02)
    assert time.monotonic() - started < 0.8


def test_renewal_keeps_a_slot_and_fails_after_a_flush(r):
    m = SlotManager(r, limit=1, ttl=0.3)
    slot = m.acquire(5)
    for _ in range(4):
        time.sleep(0.15)
        assert m.renew(slot)
    assert m.acquire(5) is None
    r.flushdb()
    assert m.renew(slot) is False


def test_a_release_notifies_other_workers_not_the_releasing_one(r, redis_url):
    from prosaas_recordings.wakeup import ReleaseNotices

    prefix = f"test:slots:{time.monotonic_ns()}:"
    mine = SlotManager(r, limit=1, ttl=5, prefix=prefix, origin="w1")
    heard: dict[str, list[int]] = {"w1": [], "w2": []}
    listeners = [
        ReleaseNotices(redis.Redis.from_url(redis_url), mine.channel, w, heard[w].append).start()
        for w in ("w1", "w2")
    ]
    try:
        time.sleep(0.3)  # subscribed
        slot = mine.acquire(11)
        assert mine.release(slot) == (True, 0)
        assert mine.release(slot) == (False, 0)  # not ours any more: nothing announced
        deadline = time.monotonic() + 3
        while not heard["w2"] and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
        assert heard == {"w1": [], "w2": [11]}
    finally:
        for listener in listeners:
            listener.stop()
