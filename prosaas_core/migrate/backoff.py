"""Jittered exponential backoff, shared by the lock wait and the DDL retries."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator


def delays(first: float = 0.05, factor: float = 1.6, cap: float = 2.0) -> Iterator[float]:
    """Endless delays: exponential up to `cap`, each jittered to 50-100% so that many
    migrators started together (8 containers at boot) do not retry in lockstep."""
    delay = first
    while True:
        yield delay * random.uniform(0.5, 1.0)
        delay = min(cap, delay * factor)


def sleep_until(deadline: float, delay: float) -> None:
    """Sleep `delay` seconds, but never past `deadline` (a time.monotonic() value)."""
    time.sleep(max(0.0, min(delay, deadline - time.monotonic())))
