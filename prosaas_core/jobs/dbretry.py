"""Bounded retries of a job's own writes across a database blip.

A PostgreSQL restart or a terminated backend kills the connection a statement was on; the
statement is retried on a fresh connection until a time budget runs out. Every job write is
one fenced statement (see store.py), so running it twice changes nothing a second time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError

from prosaas_core.backoff import delays
from prosaas_core.errors import first_line

log = logging.getLogger("prosaas.worker")

R = TypeVar("R")

#: first pause between two tries; doubled each time up to MAX_PAUSE
FIRST_PAUSE = 0.05
MAX_PAUSE = 1.0


def transient(exc: BaseException | None) -> bool:
    """True for a lost connection or a server that does not answer (yet): worth a retry on a
    fresh connection. A constraint violation, a deadlock or a statement timeout is not.

    Takes SQLAlchemy's wrapped errors and the driver's own (``engine.raw_connection()`` lets
    a failed connect through unwrapped)."""
    orig: BaseException | None
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        if not isinstance(exc, OperationalError):
            return False
        orig = exc.orig
    elif _driver_connection_error(exc):
        orig = exc
    else:
        return False
    code = getattr(orig, "pgcode", None)
    if code is None:  # the driver could not connect or lost the socket: no server answer
        return True
    # 08: connection exception; 57P0x: the server is shutting down or restarting
    return code.startswith("08") or code in ("57P01", "57P02", "57P03")


def _driver_connection_error(exc: BaseException | None) -> bool:
    try:
        import psycopg2
    except ImportError:  # SQLite only
        return False
    return isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError)


def retry_transient(
    fn: Callable[[], R],
    budget: float,
    *,
    what: str = "job write",
    give_up: Callable[[], bool] = lambda: False,
) -> R:
    """`fn()`, tried again after a transient error until `budget` seconds have passed (or
    `give_up()` says so); then the last error is raised. One log line per outage, not per try."""
    end = time.monotonic() + budget
    pauses = delays(FIRST_PAUSE, cap=MAX_PAUSE)
    pause = next(pauses)
    tries = 0
    while True:
        try:
            result = fn()
        except Exception as exc:
            if not transient(exc) or time.monotonic() + pause > end or give_up():
                if tries:
                    log.warning("%s: database still unreachable after %d tries", what, tries + 1)
                raise
            if tries == 0:
                log.warning(
                    "%s: database connection lost, retrying for up to %.0fs: %s",
                    what,
                    budget,
                    first_line(exc),
                )
            tries += 1
            time.sleep(pause)
            pause = next(pauses)
            continue
        if tries:
            log.info("%s: database back after %d tries", what, tries + 1)
        return result
