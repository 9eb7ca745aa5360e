"""Wake downloads waiting for one of a business's slots when one is released, in any worker.

A release publishes ``"<business_id> <origin>"`` on the slots channel (see `slots`); one thread
per worker listens and wakes one waiter of that business. Releases in this worker wake a local
waiter directly (its own notices are ignored when they come back). Waiters still time out and
retry on their own, which covers what no notice announces: a dead worker's slot expiring, and
notices missed while the subscription was down.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from typing import Any

log = logging.getLogger(__name__)


class ReleaseNotices:
    """Per-business release counters that waiting threads block on."""

    def __init__(self, redis: Any, channel: str, origin: str) -> None:
        self.redis, self.channel, self.origin = redis, channel, origin
        self.lock = threading.Lock()
        self.conds: dict[int, threading.Condition] = {}
        self.seq: dict[int, int] = defaultdict(int)
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None

    def _cond(self, business_id: int) -> threading.Condition:
        cond = self.conds.get(business_id)
        if cond is None:
            cond = self.conds.setdefault(business_id, threading.Condition(self.lock))
        return cond

    def seen(self, business_id: int) -> int:
        """The release count to pass to `wait` (read it before trying to acquire)."""
        with self.lock:
            return self.seq[business_id]

    def wait(self, business_id: int, seen: int, timeout: float) -> None:
        """Return when a slot of `business_id` was released since `seen`, or after `timeout`."""
        cond = self._cond(business_id)
        with self.lock:
            if self.seq[business_id] == seen:
                cond.wait(timeout)

    def notify(self, business_id: int) -> None:
        """One slot of `business_id` came free: wake one waiter (one slot, one download)."""
        cond = self._cond(business_id)
        with self.lock:
            self.seq[business_id] += 1
            cond.notify(1)

    # -- the subscription -----------------------------------------------------------------

    def start(self) -> ReleaseNotices:
        self.thread = threading.Thread(
            target=self._listen, name="recording-slot-notices", daemon=True
        )
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(2)

    def _listen(self) -> None:
        backoff = 0.1
        while not self.stop_event.is_set():
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self.channel)
                backoff = 0.1
                while not self.stop_event.is_set():
                    msg = pubsub.get_message(timeout=0.5)
                    if msg is not None and msg.get("type") == "message":
                        self._on_message(msg["data"])
            except Exception as exc:  # Redis down: waiters fall back to retrying on timeouts
                log.warning("slot notices unavailable (%s); retrying", type(exc).__name__)
                self.stop_event.wait(backoff)
                backoff = min(5.0, backoff * 2)
            finally:
                try:
                    pubsub.close()
                except Exception:
                    pass

    def _on_message(self, data: bytes | str) -> None:
        text = data.decode() if isinstance(data, bytes) else data
        business, _, origin = text.partition(" ")
        if origin == self.origin:  # our own release: its waiter was woken already
            return
        try:
            self.notify(int(business))
        except ValueError:
            return
