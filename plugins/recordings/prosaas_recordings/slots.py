"""Per-business download slots shared by every worker on every machine, in Redis.

One sorted set per business: member = a random token owned by one download, score = the time
(Redis's clock, milliseconds) its lease ends. Acquiring first drops expired members, so a slot
held by a worker that died comes back at most one lease after its last renewal. Renewing and
releasing name the token: a worker whose slot expired (and was perhaps taken by another) can
neither renew nor release anyone else's. Each step is one Lua script, so it is atomic.

If Redis loses the sets (a flush, a restart), holders find out at their next renewal, which
fails, and they stop: the limit is never exceeded by more than what was in flight for one
renewal period.

A release also publishes ``"<business_id> <origin>"`` on ``<prefix>released``, so downloads
waiting for a slot in any worker are woken at once instead of polling (`ReleaseNotices`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

PREFIX = "prosaas:recordings:slots:"

_ACQUIRE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
return redis.call('ZCARD', KEYS[1])
"""

_RENEW = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local score = redis.call('ZSCORE', KEYS[1], ARGV[2])
if not score or tonumber(score) <= now then return 0 end
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) * 2)
return 1
"""

_RELEASE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if removed == 1 and ARGV[2] ~= '' then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return {removed, redis.call('ZCARD', KEYS[1])}
"""

_ACTIVE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local out = {}
for i, key in ipairs(KEYS) do out[i] = redis.call('ZCOUNT', key, '(' .. now, '+inf') end
return out
"""


@dataclass(frozen=True)
class Slot:
    """One held slot: the business and the token that proves ownership."""

    business_id: int
    token: str
    active: int  # slots held for the business right after this one was acquired


class SlotManager:
    """Acquire, renew and release per-business slots (`limit` each, leases of `ttl` seconds)."""

    def __init__(
        self,
        redis: Any,
        *,
        limit: int = 3,
        ttl: float = 30.0,
        prefix: str = PREFIX,
        origin: str = "",
    ):
        self.redis, self.limit, self.prefix, self.origin = redis, limit, prefix, origin
        self.channel = f"{prefix}released"
        self.ttl_ms = max(1, int(ttl * 1000))
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)
        self._active = redis.register_script(_ACTIVE)

    def key(self, business_id: int) -> str:
        return f"{self.prefix}{business_id}"

    def acquire(self, business_id: int) -> Slot | None:
        """A slot for `business_id`, or None when all `limit` are held."""
        token = secrets.token_hex(12)
        n = self._acquire(keys=[self.key(business_id)], args=[self.limit, self.ttl_ms, token])
        return Slot(business_id, token, int(n)) if n else None

    def renew(self, slot: Slot) -> bool:
        """Extend the lease; False when the slot was lost (expired or Redis flushed)."""
        return bool(self._renew(keys=[self.key(slot.business_id)], args=[self.ttl_ms, slot.token]))

    def release(self, slot: Slot) -> tuple[bool, int]:
        """Give the slot back. Returns (it was still ours, slots held for the business after)."""
        removed, active = self._release(
            keys=[self.key(slot.business_id)],
            args=[slot.token, self.channel, f"{slot.business_id} {self.origin}"],
        )
        return bool(removed), int(active)

    def active(self, business_id: int) -> int:
        """Slots currently held (unexpired) for `business_id`."""
        return self.active_many([business_id])[business_id]

    def active_many(self, business_ids: list[int]) -> dict[int, int]:
        """Slots currently held for each of `business_ids`, in one round trip."""
        if not business_ids:
            return {}
        counts = self._active(keys=[self.key(b) for b in business_ids])
        return {b: int(n) for b, n in zip(business_ids, counts, strict=True)}
