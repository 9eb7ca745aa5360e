"""Per-attempt time limits, enforced with SIGALRM in the main thread (where RQ runs jobs)."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class JobTimeout(BaseException):
    """The attempt ran past its job type's ``timeout``.

    A BaseException, like KeyboardInterrupt, so a handler's ``except Exception`` cannot swallow
    it; ``with`` blocks (sessions) still roll back on the way out.
    """


@contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Raise JobTimeout in this thread after `seconds`. Any timer already set (RQ's own job
    timeout, a backstop) is suspended and restored with its remaining time."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def _expired(signum, frame) -> None:
        raise JobTimeout(f"timed out after {seconds:g}s")

    started = time.monotonic()
    previous_handler = signal.signal(signal.SIGALRM, _expired)
    previous_delay, previous_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        if previous_delay:
            left = max(previous_delay - (time.monotonic() - started), 0.001)
            signal.setitimer(signal.ITIMER_REAL, left, previous_interval)
