"""Quiet outage reporting: one line when a dependency goes away, one when it is back.

Loops that poll a dependency (the sweeper twice a second, the lease every second) would log a
traceback per round during an outage; they report through an ``Outage`` instead, which counts
the failures in between and says how long the outage lasted.
"""

from __future__ import annotations

import logging
import threading
import time

from prosaas_core.errors import first_line


class Outage:
    """The state of one dependency (``database``, ``redis``) as seen by one loop."""

    def __init__(self, name: str, where: str, logger: logging.Logger) -> None:
        self.name = name
        self.where = where
        self.log = logger
        self.down_since: float | None = None
        self.failures = 0
        #: monotonic time the dependency last came back (0: never went away)
        self.back_at = 0.0
        self._lock = threading.Lock()

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            self.failures += 1
            if self.down_since is None:
                self.down_since = time.monotonic()
                self.log.warning(
                    "DEPENDENCY DOWN %s (%s): %s; retrying quietly",
                    self.name,
                    self.where,
                    first_line(exc),
                )

    def ok(self) -> bool:
        """Record a success; True when this ends an outage."""
        with self._lock:
            if self.down_since is None:
                return False
            took = time.monotonic() - self.down_since
            self.log.warning(
                "DEPENDENCY BACK %s (%s) after %.1fs, %d failed tries",
                self.name,
                self.where,
                took,
                self.failures,
            )
            self.down_since = None
            self.failures = 0
            self.back_at = time.monotonic()
            return True
