"""Exponential backoff, the one implementation: job retries, service restarts, migration lock
polls and DDL retries, database-write retries, plugin retries (recordings, broadcast) all use it.

Public: plugins import ``prosaas_core.backoff``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator


def exponential(attempt: int, base: float, cap: float, *, factor: float = 2.0) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based):
    ``base * factor**(attempt-1)``, never more than `cap` (attempts below 1 count as 1)."""
    n = min(max(0, attempt - 1), 64)  # past 64 steps any cap is reached; factor**n can't overflow
    return min(cap, base * factor**n)


def delays(
    first: float, *, factor: float = 2.0, cap: float, jitter: float = 0.0
) -> Iterator[float]:
    """Endless delays ``first, first*factor, ...`` up to `cap`. With `jitter` (0 to 1) each is
    scaled by a random factor in ``[1 - jitter, 1]`` so that many processes started together
    do not retry in lockstep."""
    delay = first
    while True:
        yield delay * random.uniform(1.0 - jitter, 1.0) if jitter else delay
        delay = min(cap, delay * factor)


def sleep_until(deadline: float, delay: float) -> None:
    """Sleep `delay` seconds, but never past `deadline` (a ``time.monotonic()`` value)."""
    time.sleep(max(0.0, min(delay, deadline - time.monotonic())))
