"""Run DDL under ``lock_timeout``, retrying with jittered backoff within a total budget."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError

from prosaas_core.backoff import delays
from prosaas_core.errors import ProsaasError

log = logging.getLogger("prosaas.migrate")

T = TypeVar("T")

#: lock_not_available (lock_timeout) and deadlock_detected: both mean "try again later"
RETRYABLE_PGCODES = {"55P03", "40P01"}


class DdlLockBudgetExceeded(ProsaasError):
    """DDL kept hitting lock_timeout on a busy table for longer than the DDL budget."""


def is_lock_timeout(exc: BaseException) -> bool:
    """Whether `exc` is a lock timeout (or deadlock) that a later attempt may not hit."""
    orig = getattr(exc, "orig", None)
    if getattr(orig, "pgcode", None) in RETRYABLE_PGCODES:
        return True
    return "database is locked" in str(orig or "")  # SQLite: busy_timeout ran out


def retry_on_lock_timeout(what: str, fn: Callable[[], T], budget: float) -> T:
    """Call `fn` (one whole transaction) until it does not hit a lock timeout.

    Every attempt runs under the connection's ``lock_timeout``: there is never a last attempt
    without one, so writers are never queued behind this DDL for longer than that timeout.
    Raises DdlLockBudgetExceeded when `budget` seconds are spent.
    """
    deadline = time.monotonic() + budget
    for attempt, delay in enumerate(delays(0.1, factor=1.6, cap=5.0, jitter=0.5), start=1):
        try:
            return fn()
        except DBAPIError as exc:
            if not is_lock_timeout(exc):
                raise
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DdlLockBudgetExceeded(
                    f"{what}: background tables stayed locked by other transactions for "
                    f"{budget:g}s ({attempt} attempts); find the long transaction in "
                    f"pg_stat_activity and retry `prosaas db upgrade`"
                ) from exc
            delay = min(delay, remaining)
            log.warning(
                "%s: lock timeout on attempt %d (another transaction holds a conflicting "
                "lock); retrying in %.2fs",
                what,
                attempt,
                delay,
            )
            time.sleep(delay)
    raise AssertionError("unreachable")
