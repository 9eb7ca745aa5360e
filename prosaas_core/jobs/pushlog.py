"""What a process says about its failed pushes: during an outage every enqueue fails to push,
so one warning per WARN_EVERY seconds, the failures in between counted in the next line; and
when pushes work again, one line with the count (at most one per WARN_EVERY unless a warning came
in between, so a flapping Redis is a few lines every five seconds, not one per request)."""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import Any

log = logging.getLogger("prosaas.jobs")

#: seconds between two lines about failed pushes of one process (the rest are counted)
WARN_EVERY = 5.0


class PushLog:
    """The push log of one runtime."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._warned = self._back = float("-inf")  # monotonic times of the last lines
        self._quiet = 0  # failures since the last line
        self.down = False  # a push failed since the last "work again"

    def failed(self, job_id: int, exc: Exception) -> None:
        now = time.monotonic()
        with self._lock:
            self.down = True
            if now - self._warned < WARN_EVERY:
                self._quiet += 1
                quiet = None
            else:
                quiet, self._quiet, self._warned = self._quiet, 0, now
        if quiet is None:
            log.debug("Redis unavailable, job %s stays queued for the sweeper", job_id)
            return
        more = f" ({quiet} more since the last warning)" if quiet else ""
        log.warning(
            "Redis unavailable, job %s stays queued for the sweeper%s: %s", job_id, more, exc
        )

    def worked(self) -> None:
        """A push worked; the first after failures says so (callers check `down` first)."""
        now = time.monotonic()
        with self._lock:
            # within WARN_EVERY of the last such line only when no warning came since: the last
            # line about a process's pushes is never a stale "unavailable"
            if not self.down or (now - self._back < WARN_EVERY and self._warned < self._back):
                return
            quiet, self._quiet, self.down, self._back = self._quiet, 0, False, now
        more = f" ({quiet} more failed since the last warning)" if quiet else ""
        log.warning("Redis pushes work again%s", more)


_logs: weakref.WeakKeyDictionary[Any, PushLog] = weakref.WeakKeyDictionary()
_logs_lock = threading.Lock()


def push_log(rt: Any) -> PushLog:
    """The push log of runtime `rt`."""
    found = _logs.get(rt)
    if found is None:
        with _logs_lock:
            found = _logs.setdefault(rt, PushLog())
    return found


def pushed(rt: Any) -> None:
    """A push of `rt` worked: cheap unless pushes had failed."""
    found = _logs.get(rt)
    if found is not None and found.down:
        found.worked()
