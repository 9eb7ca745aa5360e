"""Hear at once when another worker releases one of a business's slots: the core's release
notices (``prosaas_core.limits.ReleaseNotices``) with the business id as an int.

Notices of this worker's own releases are skipped: the releasing thread starts the next
download itself. The worker still retries queued businesses on its own now and then, which
covers what no notice announces: a dead worker's slot expiring, and notices missed while the
subscription was down.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from prosaas_core import limits

if TYPE_CHECKING:
    from redis import Redis


class ReleaseNotices(limits.ReleaseNotices):
    """A background subscription calling `on_release(business_id)` for others' releases."""

    def __init__(
        self, redis: Redis, channel: str, origin: str, on_release: Callable[[int], None]
    ) -> None:
        def by_business(key: str) -> None:
            if key.isdigit():
                on_release(int(key))

        super().__init__(redis, channel, origin, by_business)

    def start(self, name: str = "recording-slot-notices") -> ReleaseNotices:
        super().start(name)
        return self
