"""Hear at once when another worker releases one of a business's slots: the core's release
notices (``prosaas_core.limits.ReleaseNotices``) with the business id as an int.

Notices of this worker's own releases are skipped: the releasing thread starts the next
download itself. The worker still retries queued businesses on its own now and then, which
covers what no notice announces: a dead worker's slot expiring, and notices missed while the
subscription was down.

The same channel carries ``claim <origin>``: a worker that claimed more than it has downloads
for (a burst of due tasks) wakes the others to claim theirs now rather than at their next poll.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from prosaas_core import limits

if TYPE_CHECKING:
    from redis import Redis


#: the notice's key when a worker claimed more than it can start now: others should claim
CLAIM = "claim"


class ReleaseNotices(limits.ReleaseNotices):
    """A background subscription calling `on_release(business_id)` for others' releases, and
    `on_claim()` when another worker says there is due work it cannot start (`nudge`)."""

    def __init__(
        self,
        redis: Redis,
        channel: str,
        origin: str,
        on_release: Callable[[int], None],
        on_claim: Callable[[], None] | None = None,
    ) -> None:
        def by_business(key: str) -> None:
            if key.isdigit():
                on_release(int(key))
            elif key == CLAIM and on_claim is not None:
                on_claim()

        super().__init__(redis, channel, origin, by_business)

    def nudge(self) -> None:
        """Tell the other workers to claim now instead of at their next poll."""
        self.redis.publish(self.channel, f"{CLAIM} {self.origin}")

    def start(self, name: str = "recording-slot-notices") -> ReleaseNotices:
        super().start(name)
        return self
