"""The whole-download deadline, enforced at the socket.

A read timeout bounds each wait for bytes, not the download: a server sending one byte just
inside every read timeout would hold a download forever. One watchdog thread per process keeps
the deadlines of the downloads in flight and, when one passes, shuts its socket down, so the
read blocked on it returns at once whatever the server does.
"""

from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time
from typing import Any


class Watch:
    """One download's deadline; `fired` once the watchdog shut its socket."""

    __slots__ = ("sock", "fired", "cancelled")

    def __init__(self, sock: Any) -> None:
        self.sock, self.fired, self.cancelled = sock, False, False

    def cancel(self) -> None:
        self.cancelled = True


class Watchdog:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Watch]] = []
        self._cond = threading.Condition()
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, sock: Any, seconds: float) -> Watch:
        """Shut `sock` down in `seconds` unless the returned watch is cancelled first."""
        w = Watch(sock)
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + seconds, next(self._ids), w))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="download-deadline", daemon=True
                )
                self._thread.start()
            self._cond.notify()
        return w

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._heap and self._heap[0][2].cancelled:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait(30.0)
                    if not self._heap:
                        self._thread = None
                        return
                    continue
                due, _, w = self._heap[0]
                wait = due - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
            if not w.cancelled:
                w.fired = True
                try:
                    w.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


WATCHDOG = Watchdog()


def response_socket(resp: Any) -> Any | None:
    """The socket a urllib3 response is read from (None if it is already released)."""
    conn = getattr(resp, "connection", None)
    return getattr(conn, "sock", None)
