"""Hear at once when another worker releases one of a business's slots.

A release publishes ``"<business_id> <origin>"`` on the slots channel (see `slots`); one thread
per worker listens and calls back with the business id, so a download queued for that business
can take the slot without polling. Notices of this worker's own releases are skipped: the
releasing thread starts the next download itself. The worker still retries queued businesses
on its own now and then, which covers what no notice announces: a dead worker's slot expiring,
and notices missed while the subscription was down.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class ReleaseNotices:
    """A background subscription calling `on_release(business_id)` for others' releases."""

    def __init__(
        self, redis: Any, channel: str, origin: str, on_release: Callable[[int], None]
    ) -> None:
        self.redis, self.channel, self.origin = redis, channel, origin
        self.on_release = on_release
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> ReleaseNotices:
        self.thread = threading.Thread(
            target=self._listen, name="recording-slot-notices", daemon=True
        )
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread is not None and self.thread is not threading.current_thread():
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
            except Exception as exc:  # Redis away: the worker's own retries cover the gap
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
        if origin == self.origin:
            return
        try:
            business_id = int(business)
        except ValueError:
            return
        try:
            self.on_release(business_id)
        except Exception:  # never let one failed start end the subscription
            log.exception("starting a download after a slot notice failed")
