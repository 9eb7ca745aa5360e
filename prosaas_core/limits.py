"""Flow control shared by every worker on every machine: concurrency slots and rate limits, in
Redis. Public: plugins use these directly (``ctx.limits`` in jobs and services) and the core
uses them for ``JobType(concurrency_per_business=..., rate_per_business=...)``.

**Slots.** One sorted set per key (normally a business): member = a token owned by one holder,
score = the time (Redis's clock, milliseconds) its lease ends. Acquiring first drops expired
members, so a slot held by a process that died comes back at most one lease after its last
renewal. Renewing and releasing name the token: a holder whose lease ran out (and whose slot was
perhaps taken by another) can neither renew nor release anyone else's. A release publishes
``"<key> <origin>"`` on ``<prefix>released`` so waiters anywhere are woken at once
(`ReleaseNotices`) instead of polling. A holder that has a successor of its own waiting (the
next download of the same business) hands the slot over instead (`handoff`): the release and
the acquire in one script, one round trip, the slot never free in between, and no notice (no
slot came free).

**Rates.** GCRA (the generic cell rate algorithm) over one Redis key per limited key: the key
holds the theoretical arrival time of the next request. ``N/period`` with burst ``b`` lets ``b``
requests through at once and then one every ``period/N``. ``backoff(key, s)`` pushes the key's
next allowed time out by ``s`` seconds for every process (a provider's 429 with Retry-After).

Every step is one Lua script, so it is atomic. If Redis loses the keys (a flush, a restart), slot
holders find out at their next renewal and may re-add themselves (``renew(..., readd=True)``:
what is running is the truth), and a rate limit starts afresh: the overshoot is at most one burst
per key, and for slots at most what was in flight for one lease.
"""

from __future__ import annotations

import logging
import math
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prosaas_core.errors import ConfigError

log = logging.getLogger("prosaas.limits")

SLOTS_PREFIX = "prosaas:slots:"
RATES_PREFIX = "prosaas:rate:"

_NOW = "local t = redis.call('TIME')\nlocal now = t[1] * 1000 + t[2] / 1000\n"

# KEYS[1] set; ARGV: limit, ttl_ms, token. Returns the count held after, or 0 when full. A
# token that is already a live member is renewed (idempotent acquire).
_ACQUIRE = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local held = redis.call('ZSCORE', KEYS[1], ARGV[3])
if not held and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
return redis.call('ZCARD', KEYS[1])
"""
)

# KEYS[1] set; ARGV: limit, ttl_ms, token... Takes a slot for each token while there is room
# (in order); returns the count held after each one taken (fewer entries: the set was full).
_ACQUIRE_MANY = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local limit, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {}
for i = 3, #ARGV do
  local held = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if not held and redis.call('ZCARD', KEYS[1]) >= limit then break end
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[i])
  out[#out + 1] = redis.call('ZCARD', KEYS[1])
end
if #out > 0 then redis.call('PEXPIRE', KEYS[1], ttl * 2) end
return out
"""
)

# KEYS[1] set; ARGV: ttl_ms, token, readd. 1 renewed, 2 re-added (it had vanished), 0 lost.
_RENEW = (
    _NOW
    + """
local score = redis.call('ZSCORE', KEYS[1], ARGV[2])
local result = 1
if not score or tonumber(score) <= now then
  if ARGV[3] ~= '1' then return 0 end
  if score then
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  end
  result = 2
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) * 2)
return result
"""
)

# KEYS[1] set; ARGV: token, channel ('' = no notice), message, key that must exist for the
# notice to go out ('' = none needed). Returns {removed, held after}.
_RELEASE = (
    _NOW
    + """
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local wanted = ARGV[4] == '' or redis.call('EXISTS', ARGV[4]) == 1
local told = 0
if removed == 1 and ARGV[2] ~= '' and wanted then
  redis.call('PUBLISH', ARGV[2], ARGV[3])
  told = 1
end
return {removed, redis.call('ZCARD', KEYS[1]), told}
"""
)

# KEYS[1] set; ARGV: token released, limit, ttl_ms, token taken. Drops the first token and takes
# a slot for the second in one step, so a slot passes from one holder to the next without being
# free in between. Returns {removed, taken (1/0), held after}. Nothing is announced: no slot came
# free (when none could be taken, the set was at or over its limit without the first token).
_HANDOFF = (
    _NOW
    + """
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return {removed, 0, redis.call('ZCARD', KEYS[1])}
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[4])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) * 2)
return {removed, 1, redis.call('ZCARD', KEYS[1])}
"""
)

_ACTIVE = (
    _NOW
    + """
local out = {}
for i, key in ipairs(KEYS) do out[i] = redis.call('ZCOUNT', key, '(' .. now, '+inf') end
return out
"""
)

# KEYS[1] set. Returns token, milliseconds left on its lease, its score as Redis states it,
# token, ... of the unexpired slots.
_HOLDERS = (
    _NOW
    + """
local out = {}
local held = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES')
for i = 1, #held, 2 do
  out[#out + 1] = held[i]
  out[#out + 1] = tostring(tonumber(held[i + 1]) - now)
  out[#out + 1] = held[i + 1]
end
return out
"""
)

# KEYS[1] set; ARGV: token, score. Removes the token only while its score (lease end) is the
# one it was listed with: any renewal since has moved it. 1 removed, 0 not.
_RELEASE_UNRENEWED = """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
"""

# KEYS[1] tat, KEYS[2] window counter prefix; ARGV: interval_ms, burst, cost, take ('1'/'0'),
# period_ms. Returns '0' when allowed (and taken if take), else the milliseconds to wait.
_RATE = (
    _NOW
    + """
local T = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + T * cost
local allow_at = new_tat - burst * T
if allow_at > now then return tostring(allow_at - now) end
if ARGV[4] == '1' then
  redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil(new_tat - now) + 1000)
  local period = tonumber(ARGV[5])
  local w = KEYS[2] .. math.floor(now / period)
  redis.call('INCRBY', w, cost)
  redis.call('PEXPIRE', w, period * 2)
end
return '0'
"""
)

# KEYS[1] tat; ARGV: seconds_ms, interval_ms, burst. Nobody passes before now + seconds.
_BACKOFF = (
    _NOW
    + """
local T = tonumber(ARGV[2])
local want = now + tonumber(ARGV[1]) + (tonumber(ARGV[3]) - 1) * T
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if want > tat then
  redis.call('SET', KEYS[1], tostring(want), 'PX', math.ceil(want - now) + 1000)
  tat = want
end
return tostring(math.max(0, tat - now - (tonumber(ARGV[3]) - 1) * T))
"""
)

_USED = (
    _NOW
    + """
local out = {}
for i, key in ipairs(KEYS) do
  local period = tonumber(ARGV[i])
  out[i] = tonumber(redis.call('GET', key .. math.floor(now / period)) or 0)
end
return out
"""
)


# -- rates ------------------------------------------------------------------------------------

_PERIODS = {"s": 1.0, "sec": 1.0, "second": 1.0, "min": 60.0, "m": 60.0, "minute": 60.0}
_PERIODS.update({"h": 3600.0, "hour": 3600.0})
_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*([a-z]+)\s*$")


@dataclass(frozen=True)
class Rate:
    """``count`` starts per ``period`` seconds, at most ``burst`` of them back to back."""

    count: int
    period: float
    burst: int

    @property
    def per_second(self) -> float:
        return self.count / self.period

    @property
    def interval(self) -> float:
        """Seconds between two starts at the steady rate."""
        return self.period / self.count

    def __str__(self) -> str:
        unit = {1.0: "s", 60.0: "min", 3600.0: "h"}.get(self.period, f"{self.period:g}s")
        return f"{self.count}/{unit}"


def default_burst(count: int, period: float) -> int:
    """A tenth of a second's worth of starts, at least 1 (so a late caller can catch up a
    little without letting a crowd through at once)."""
    return max(1, math.ceil(count / period / 10))


def parse_rate(value: str | Rate, *, burst: int | None = None) -> Rate:
    """``"20/s"``, ``"600/min"``, ``"1000/h"`` -> `Rate`. ConfigError for anything else."""
    if isinstance(value, Rate):
        return value
    m = _RATE_RE.match(str(value).lower()) if isinstance(value, str) else None
    if m is None or m.group(2) not in _PERIODS or int(m.group(1)) < 1:
        raise ConfigError(f"invalid rate {value!r}: use N/s, N/min or N/h with N >= 1")
    count, period = int(m.group(1)), _PERIODS[m.group(2)]
    if burst is not None and burst < 1:
        raise ConfigError(f"invalid burst {burst!r} for rate {value!r}: must be >= 1")
    return Rate(count, period, burst or default_burst(count, period))


class RateLimiter:
    """Per-key rate limits shared by every process using the same Redis."""

    def __init__(self, redis: Any, *, prefix: str = RATES_PREFIX) -> None:
        self.redis, self.prefix = redis, prefix
        self._rate = redis.register_script(_RATE)
        self._backoff = redis.register_script(_BACKOFF)
        self._used = redis.register_script(_USED)

    def _keys(self, key: str) -> list[str]:
        return [f"{self.prefix}{key}", f"{self.prefix}{key}:n:"]

    def _call(self, key: str, rate: Rate, cost: int, take: bool) -> float:
        wait_ms = self._rate(
            keys=self._keys(key),
            args=[rate.interval * 1000, rate.burst, cost, "1" if take else "0", rate.period * 1000],
        )
        return float(wait_ms) / 1000

    def acquire(self, key: str, rate: Rate, *, cost: int = 1) -> float:
        """Take `cost` starts now: 0.0 when allowed (and taken), else the seconds until they
        would be (nothing taken)."""
        return self._call(key, rate, cost, True)

    def peek(self, key: str, rate: Rate) -> float:
        """Seconds until one start would be allowed (0.0: now), taking nothing."""
        return self._call(key, rate, 1, False)

    def backoff(self, key: str, seconds: float, rate: Rate) -> float:
        """Let nobody start for `key` before `seconds` from now (a provider said Retry-After).
        Returns the seconds until the next start is allowed."""
        return (
            float(
                self._backoff(
                    keys=[self._keys(key)[0]],
                    args=[seconds * 1000, rate.interval * 1000, rate.burst],
                )
            )
            / 1000
        )

    def used(self, items: list[tuple[str, Rate]]) -> list[int]:
        """Starts taken in the current period window of each (key, rate), in one round trip."""
        if not items:
            return []
        counts = self._used(
            keys=[self._keys(k)[1] for k, _ in items], args=[r.period * 1000 for _, r in items]
        )
        return [int(n) for n in counts]


# -- slots ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Slot:
    """One held slot: its key and the token that proves ownership."""

    key: str
    token: str
    active: int  # slots held for the key right after this one was acquired


@dataclass(frozen=True)
class Held:
    """A slot as `Slots.holders` lists it."""

    left: float  # seconds left on its lease when listed
    lease_end: str  # the lease's end as Redis states it (milliseconds on its clock)


class Slots:
    """Acquire, renew and release per-key slots with leases (`ttl` seconds)."""

    def __init__(self, redis: Any, *, prefix: str = SLOTS_PREFIX, origin: str = "") -> None:
        self.redis, self.prefix, self.origin = redis, prefix, origin
        self.channel = f"{prefix}released"
        self._acquire = redis.register_script(_ACQUIRE)
        self._acquire_many = redis.register_script(_ACQUIRE_MANY)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)
        self._handoff = redis.register_script(_HANDOFF)
        self._active = redis.register_script(_ACTIVE)
        self._holders = redis.register_script(_HOLDERS)
        self._release_unrenewed = redis.register_script(_RELEASE_UNRENEWED)

    def redis_key(self, key: str) -> str:
        return f"{self.prefix}{key}"

    @staticmethod
    def _ms(ttl: float) -> int:
        return max(1, int(ttl * 1000))

    def acquire(self, key: str, limit: int, ttl: float, *, token: str | None = None) -> Slot | None:
        """A slot of `key` (at most `limit` held), or None when all are held. With `token`,
        acquiring a slot that token already holds renews it."""
        token = token or secrets.token_hex(12)
        n = self._acquire(keys=[self.redis_key(key)], args=[limit, self._ms(ttl), token])
        return Slot(key, token, int(n)) if n else None

    def acquire_many(self, key: str, limit: int, ttl: float, n: int) -> list[Slot]:
        """Up to `n` slots of `key` (at most `limit` held), in one round trip: as many as
        were free, possibly none. Each is released or renewed on its own, as from `acquire`."""
        if n <= 0:
            return []
        tokens = [secrets.token_hex(12) for _ in range(n)]
        counts = self._acquire_many(
            keys=[self.redis_key(key)], args=[limit, self._ms(ttl), *tokens]
        )
        return [Slot(key, t, int(c)) for t, c in zip(tokens, counts, strict=False)]

    def renew(self, slot: Slot, ttl: float, *, readd: bool = False) -> bool:
        """Extend the lease; False when it was lost (expired, or Redis lost it). With `readd`,
        a lost slot is put back even above the limit: the holder is still running, so it
        counts (how limits recover from a Redis flush)."""
        res = self._renew(
            keys=[self.redis_key(slot.key)], args=[self._ms(ttl), slot.token, "1" if readd else "0"]
        )
        return bool(res)

    def release(
        self, slot: Slot, *, notify: bool = True, only_if: str | None = None
    ) -> tuple[bool, int]:
        """Give the slot back. Returns (it was still ours, slots held for the key after). The
        release notice goes out when `notify`, and (with `only_if`, a Redis key) only while
        that key exists: a waiter raises it, so releases nobody waits for stay silent."""
        removed, active, _ = self.release_noticed(slot, notify=notify, only_if=only_if)
        return removed, active

    def release_noticed(
        self, slot: Slot, *, notify: bool = True, only_if: str | None = None
    ) -> tuple[bool, int, bool]:
        """`release`, also saying whether a release notice went out."""
        removed, active, told = self._release(
            keys=[self.redis_key(slot.key)],
            args=[
                slot.token,
                self.channel if notify else "",
                f"{slot.key} {self.origin}",
                only_if or "",
            ],
        )
        return bool(removed), int(active), bool(told)

    def handoff(self, slot: Slot, limit: int, ttl: float) -> tuple[bool, Slot | None]:
        """Release `slot` and take a slot of the same key for a new holder, in one round trip:
        the slot passes on without being free in between, so the next holder needs no second
        call and no other waiter is woken for a slot that is not free. Returns (`slot` was
        still ours, the new holder's slot, or None when none is free: the key was at its limit
        even without `slot`, e.g. it had expired and been taken). Nothing is announced."""
        token = secrets.token_hex(12)
        removed, taken, active = self._handoff(
            keys=[self.redis_key(slot.key)], args=[slot.token, limit, self._ms(ttl), token]
        )
        return bool(removed), Slot(slot.key, token, int(active)) if taken else None

    def active(self, key: str) -> int:
        """Slots currently held (unexpired) for `key`."""
        return self.active_many([key])[key]

    def holders(self, key: str) -> dict[str, Held]:
        """The slots of `key` held now, by token, each with the seconds left on its lease (a
        holder's reconciliation: a token nobody owns any more can be released by name, with
        `release_unrenewed`)."""
        raw = self._holders(keys=[self.redis_key(key)])
        return {
            _text(raw[i]): Held(float(raw[i + 1]) / 1000, _text(raw[i + 2]))
            for i in range(0, len(raw), 3)
        }

    def release_unrenewed(self, key: str, token: str, held: Held) -> bool:
        """Release `token`'s slot of `key` only if its lease is still the one `holders` listed
        as `held` (no notice): any renewal since moves the lease's end, so a reconciling sweep
        and a holder renewing its slot cannot both win, however long apart. True when
        released."""
        return bool(
            self._release_unrenewed(keys=[self.redis_key(key)], args=[token, held.lease_end])
        )

    def active_many(self, keys: list[str]) -> dict[str, int]:
        """Slots currently held for each of `keys`, in one round trip."""
        if not keys:
            return {}
        counts = self._active(keys=[self.redis_key(k) for k in keys])
        return {k: int(n) for k, n in zip(keys, counts, strict=True)}


class ReleaseNotices:
    """A background subscription calling ``on_release(key)`` for each slot release announced on
    `channel` by another origin. Notices missed while Redis is away are not replayed: callers
    keep a slow timer (one lease) for what no notice announces."""

    def __init__(
        self, redis: Any, channel: str, origin: str, on_release: Callable[[str], None]
    ) -> None:
        self.redis, self.channel, self.origin = redis, channel, origin
        self.on_release = on_release
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self, name: str = "slot-notices") -> ReleaseNotices:
        self.thread = threading.Thread(target=self._listen, name=name, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(2)

    def _listen(self) -> None:
        from prosaas_core.backoff import delays

        backoff = delays(0.1, cap=5.0)
        while not self.stop_event.is_set():
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self.channel)
                backoff = delays(0.1, cap=5.0)
                while not self.stop_event.is_set():
                    msg = pubsub.get_message(timeout=0.5)
                    if msg is not None and msg.get("type") == "message":
                        self._on_message(msg["data"])
            except Exception as exc:  # Redis away: the caller's slow timer covers the gap
                log.warning("slot notices unavailable (%s); retrying", type(exc).__name__)
                self.stop_event.wait(next(backoff))
            finally:
                try:
                    pubsub.close()
                except Exception:
                    pass

    def _on_message(self, data: bytes | str) -> None:
        text = data.decode() if isinstance(data, bytes) else data
        key, _, origin = text.partition(" ")
        if origin == self.origin or not key:
            return
        try:
            self.on_release(key)
        except Exception:  # one failed callback must not end the subscription
            log.exception("slot release callback failed for key %r", key)


@dataclass
class Limits:
    """What ``ctx.limits`` is: the slots and the rate limiter on the runtime's Redis."""

    slots: Slots
    rates: RateLimiter

    @classmethod
    def on(cls, redis: Any, *, origin: str = "") -> Limits:
        return cls(Slots(redis, origin=origin), RateLimiter(redis))


__all__ = [
    "Held",
    "Limits",
    "Rate",
    "RateLimiter",
    "ReleaseNotices",
    "Slot",
    "Slots",
    "default_burst",
    "parse_rate",
]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
