"""Per-business download slots: the core's flow-control slots (``prosaas_core.limits``) keyed by
business id, with this plugin's limit, lease and key prefix.

The core keeps the algorithm (leases in a Redis sorted set, owner tokens, release notices; see
its docstring); this module only binds a business id to a slot key so the service and its log
lines keep speaking of businesses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from prosaas_core import limits

if TYPE_CHECKING:
    from redis import Redis

PREFIX = "prosaas:recordings:slots:"


@dataclass(frozen=True)
class Slot(limits.Slot):
    """A held download slot; its key is the business id."""

    @property
    def business_id(self) -> int:
        return int(self.key)


class SlotManager:
    """Acquire, renew and release per-business slots (`limit` each, leases of `ttl` seconds)."""

    def __init__(
        self,
        redis: Redis,
        *,
        limit: int = 3,
        ttl: float = 30.0,
        prefix: str = PREFIX,
        origin: str = "",
    ):
        self.limit, self.ttl = limit, ttl
        self._slots = limits.Slots(redis, prefix=prefix, origin=origin)
        self.channel = self._slots.channel

    def acquire(self, business_id: int) -> Slot | None:
        """A slot for `business_id`, or None when all `limit` are held."""
        got = self._slots.acquire(str(business_id), self.limit, self.ttl)
        return Slot(got.key, got.token, got.active) if got is not None else None

    def acquire_many(self, business_id: int, n: int) -> list[Slot]:
        """Up to `n` slots for `business_id` in one round trip: as many as are free."""
        got = self._slots.acquire_many(str(business_id), self.limit, self.ttl, n)
        return [Slot(s.key, s.token, s.active) for s in got]

    def handoff(self, slot: Slot) -> tuple[bool, Slot | None]:
        """Release `slot` and take one of the same business for the next download, in one
        round trip (no release notice: no slot came free). Returns (it was still ours, the
        next download's slot, or None when the business is at its limit without it)."""
        was_ours, got = self._slots.handoff(slot, self.limit, self.ttl)
        return was_ours, Slot(got.key, got.token, got.active) if got is not None else None

    def renew(self, slot: Slot) -> bool:
        """Extend the lease; False when the slot was lost (expired or Redis flushed)."""
        return self._slots.renew(slot, self.ttl)

    def release(self, slot: Slot) -> tuple[bool, int]:
        """Give the slot back. Returns (it was still ours, slots held for the business after)."""
        return self._slots.release(slot)

    def active(self, business_id: int) -> int:
        """Slots currently held (unexpired) for `business_id`."""
        return self.active_many([business_id])[business_id]

    def active_many(self, business_ids: list[int]) -> dict[int, int]:
        """Slots currently held for each of `business_ids`, in one round trip."""
        counts = self._slots.active_many([str(b) for b in business_ids])
        return {b: counts[str(b)] for b in business_ids}
