"""prosaas_core.limits on the real Redis: slots (limit, leases, ownership, notices) and GCRA."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from prosaas_core.errors import ConfigError
from prosaas_core.limits import Limits, Rate, RateLimiter, ReleaseNotices, Slot, Slots, parse_rate


@pytest.fixture
def r(redis_url):
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def test_parse_rate():
    assert parse_rate("20/s") == Rate(20, 1.0, 2)
    assert parse_rate("600/min") == Rate(600, 60.0, 1)
    assert parse_rate("3600/h", burst=5) == Rate(3600, 3600.0, 5)
    assert str(parse_rate("600/min")) == "600/min"
    for bad in ("20", "0/s", "20/day", "-1/s", "x/s", "", None):
        with pytest.raises(ConfigError, match="invalid rate"):
            parse_rate(bad)


def test_slots_limit_is_shared_and_per_key(r):
    a, b = Slots(r), Slots(r)
    held = [a.acquire("7", 3, 5), b.acquire("7", 3, 5), a.acquire("7", 3, 5)]
    assert all(held) and [s.active for s in held] == [1, 2, 3]
    assert b.acquire("7", 3, 5) is None
    assert a.acquire("8", 3, 5) is not None
    assert b.release(held[0]) == (True, 2)
    assert b.acquire("7", 3, 5) is not None


def test_acquire_many_takes_what_is_free_in_one_call(r):
    a, b = Slots(r), Slots(r)
    assert a.acquire("m", 5, 5) is not None
    got = b.acquire_many("m", 5, 5, 10)  # 4 free of the 10 asked for
    assert [s.active for s in got] == [2, 3, 4, 5]
    assert len({s.token for s in got}) == 4 and a.active("m") == 5
    assert a.acquire_many("m", 5, 5, 3) == [] and a.acquire("m", 5, 5) is None
    assert a.release(got[0]) == (True, 4)
    assert [s.active for s in a.acquire_many("m", 5, 5, 3)] == [5]
    assert a.acquire_many("m", 5, 5, 0) == []


def test_holders_are_the_live_tokens_with_their_lease_left(r):
    s = Slots(r)
    short, long = s.acquire("h", 5, 0.3), s.acquire("h", 5, 30)
    assert short is not None and long is not None
    held = s.holders("h")
    assert set(held) == {short.token, long.token}
    assert 0 < held[short.token].left <= 0.3 and 29 < held[long.token].left <= 30
    time.sleep(0.4)
    assert set(s.holders("h")) == {long.token}  # an expired lease holds nothing
    assert s.release(Slot("h", long.token, 0)) == (True, 0)  # released by token alone
    assert s.holders("h") == {} and s.holders("never-used") == {}


def test_release_unrenewed_loses_to_a_renewal_since_the_listing(r):
    s = Slots(r)
    a, b = s.acquire("u", 5, 10), s.acquire("u", 5, 10)
    assert a is not None and b is not None
    listed = s.holders("u")
    time.sleep(0.01)
    assert s.renew(a, 5)  # renewed after the listing, even to a shorter lease: a wins
    time.sleep(0.2)  # however long after the listing the release comes
    assert not s.release_unrenewed("u", a.token, listed[a.token])
    assert s.release_unrenewed("u", b.token, listed[b.token])  # b was not renewed
    assert set(s.holders("u")) == {a.token}
    assert not s.release_unrenewed("u", b.token, listed[b.token])  # gone already


def test_acquire_with_a_held_token_renews_instead_of_taking_another(r):
    s = Slots(r)
    first = s.acquire("k", 1, 5, token="job:1")
    assert first is not None and first.active == 1
    again = s.acquire("k", 1, 5, token="job:1")  # the same holder: no second slot
    assert again is not None and again.active == 1
    assert s.acquire("k", 1, 5, token="job:2") is None


def test_stale_token_cannot_renew_or_release_the_new_holders_slot(r):
    s = Slots(r)
    old = s.acquire("k", 1, 0.3)
    time.sleep(0.4)
    new = s.acquire("k", 1, 0.3)
    assert new is not None
    assert s.renew(old, 0.3) is False
    assert s.release(old) == (False, 1)
    assert s.active("k") == 1


def test_handoff_passes_a_full_keys_slot_on_in_one_call_and_never_above_the_limit(r):
    a, b = Slots(r), Slots(r)
    held = [a.acquire("h", 2, 5), b.acquire("h", 2, 5)]
    assert all(held)
    a.handoff(b.acquire("other", 1, 5), 1, 5)  # the script is loaded: one command from now on
    sent: list[object] = []
    execute = r.execute_command
    r.execute_command = lambda *args, **kw: sent.append(args[0]) or execute(*args, **kw)
    try:
        was_ours, nxt = a.handoff(held[0], 2, 5)
    finally:
        del r.execute_command
    assert sent == ["EVALSHA"]  # one round trip, not a release and then an acquire
    assert was_ours and nxt is not None and nxt.active == 2 and nxt.token != held[0].token
    assert a.active("h") == 2 and b.acquire("h", 2, 5) is None  # never free in between
    assert a.release(held[0]) == (False, 2)  # the old token no longer holds anything
    assert a.renew(held[0], 5) is False and a.renew(nxt, 5) is True
    assert a.release(nxt) == (True, 1)


def test_handoff_of_a_lost_slot_takes_none_of_a_full_key(r):
    s = Slots(r)
    old = s.acquire("x", 1, 0.2)
    time.sleep(0.3)
    taken = s.acquire("x", 1, 5)  # the lease ran out: another holder has the only slot
    assert taken is not None
    assert s.handoff(old, 1, 5) == (False, None)
    assert s.active("x") == 1
    assert s.release(taken) == (True, 0)
    was_ours, nxt = s.handoff(old, 1, 5)  # lost, but the key has room: a plain acquire
    assert not was_ours and nxt is not None and nxt.active == 1


def test_renew_readd_recovers_after_a_flush(r):
    s = Slots(r)
    slot = s.acquire("k", 2, 5)
    r.flushdb()
    assert s.active("k") == 0
    assert s.renew(slot, 5) is False
    assert s.renew(slot, 5, readd=True) is True
    assert s.active("k") == 1


def test_release_notice_reaches_other_origins_only(r):
    heard: list[str] = []
    got = threading.Event()

    def on_release(key: str) -> None:
        heard.append(key)
        got.set()

    notices = ReleaseNotices(r, Slots(r).channel, "listener", on_release).start()
    try:
        time.sleep(0.3)  # subscribed
        mine, other = Slots(r, origin="listener"), Slots(r, origin="other")
        mine.release(mine.acquire("a", 1, 5))
        other.handoff(other.acquire("c", 1, 5), 1, 5)  # passed on, never free: no notice
        other.release(other.acquire("b", 1, 5))
        assert got.wait(3)
        time.sleep(0.2)
        assert heard == ["b"]
    finally:
        notices.stop()


def test_gcra_burst_then_steady_interval(r):
    rl = RateLimiter(r)
    rate = parse_rate("10/s", burst=3)
    assert [rl.acquire("b1", rate) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = rl.acquire("b1", rate)
    assert 0.05 < wait <= 0.1
    assert rl.peek("b1", rate) == pytest.approx(wait, abs=0.02)
    time.sleep(wait + 0.01)
    assert rl.acquire("b1", rate) == 0.0
    assert rl.acquire("b1", rate) > 0  # one interval at a time after the burst
    assert rl.acquire("b2", rate) == 0.0  # other keys are independent
    assert rl.used([("b1", rate), ("b2", rate), ("b3", rate)])[1:] == [1, 0]


def test_gcra_rate_over_two_seconds_is_within_the_limit(r):
    rl = RateLimiter(r)
    rate = parse_rate("50/s")  # burst 5
    started = []
    end = time.monotonic() + 2.0
    while time.monotonic() < end:
        wait = rl.acquire("k", rate)
        if wait == 0:
            started.append(time.monotonic())
        else:
            time.sleep(wait)
    # at most burst + 50/s * elapsed, and nearly all of it
    assert 5 + 2 * 50 * 0.9 <= len(started) <= 5 + 2 * 50 + 1


def test_backoff_stops_every_caller(r):
    a, b = RateLimiter(r), RateLimiter(r)
    rate = parse_rate("100/s")
    assert a.acquire("k", rate) == 0.0
    assert a.backoff("k", 0.5, rate) == pytest.approx(0.5, abs=0.05)
    wait = b.acquire("k", rate)
    assert 0.4 < wait <= 0.55
    time.sleep(wait + 0.01)
    assert b.acquire("k", rate) == 0.0


def test_limits_on_runtime(runtime):
    lim = runtime.limits
    assert isinstance(lim, Limits)
    assert lim.slots.acquire("x", 1, 1) is not None
