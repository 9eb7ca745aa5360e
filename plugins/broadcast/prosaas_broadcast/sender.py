"""The send loop every part of a broadcast runs: claim a recipient, wait for the business's
(and the broadcast's) rate, call the provider, record the outcome.

Several senders (parts on other workers) share one broadcast: claims are row-level (SKIP
LOCKED) and the rate is a Redis GCRA limit per business, so together they never go faster
than the business's rate. A 429 pushes the business's limit out for every sender.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from prosaas_broadcast import store
from prosaas_broadcast.config import BroadcastConfig, retry_delay
from prosaas_broadcast.providers import (
    Message,
    PermanentError,
    Provider,
    ProviderError,
    RateLimited,
    UncertainError,
)
from prosaas_core.backoff import exponential
from prosaas_core.limits import Rate

log = logging.getLogger("prosaas.broadcast")

#: how often a sender looks at the broadcast's cancel flag and writes progress (seconds)
POLL = 0.5
#: the longest a sender sleeps at once (so it notices a cancel or a shutdown soon)
NAP = 0.25


def rate_keys(business_id: int, broadcast_id: int) -> tuple[str, str]:
    return f"broadcast:{business_id}", f"broadcast:{business_id}:{broadcast_id}"


@dataclass
class Sender:
    ctx: Any
    cfg: BroadcastConfig
    broadcast: dict
    provider: Provider
    #: what this sender did: sent, failed, retried, rate_limited, reconciled
    tally: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        b = self.broadcast
        self.business_rate: Rate = self.cfg.business_rate()
        self.own_rate: Rate = self.cfg.effective_rate(b.get("rate"))
        self.business_key, self.own_key = rate_keys(b["business_id"], b["id"])
        self._last_poll = 0.0
        self._cancelled = False
        self._cancel_applied = False
        self._lock = threading.Lock()

    # -- the loop ----------------------------------------------------------------------------

    def run(self, threads: int = 1) -> str:
        """Send until nothing is left, in `threads` threads sharing this job's claims and the
        business's rate (so a provider's latency is overlapped); returns why it stopped:
        ``done``, ``cancelled`` or ``shutdown`` (the job resumes elsewhere)."""
        if threads <= 1:
            return self._loop()
        results: list[str] = []
        errors: list[BaseException] = []

        def one() -> None:
            try:
                results.append(self._loop())
            except BaseException as exc:  # re-raised in the job's thread below
                errors.append(exc)

        pool = [
            threading.Thread(target=one, name=f"broadcast-sender-{i}", daemon=True)
            for i in range(threads)
        ]
        for th in pool:
            th.start()
        for th in pool:
            th.join()
        if errors:
            raise errors[0]
        for why in ("cancelled", "shutdown"):
            if why in results:
                return why
        return "done"

    def _loop(self) -> str:
        bid = self.broadcast["id"]
        while True:
            # once cancelled, what is pending is skipped and the loop only drains what is
            # `sending`: in-flight sends of other senders, and unknown outcomes to check
            if not self._cancelled and self._stop() and not self._cancelled:
                return "shutdown"
            if self._cancelled and not self._cancel_applied:
                self._cancel()
            with self._conn() as conn:
                c = store.claim(conn, bid, self.cfg.sending_stale)
            if c is None:
                with self._conn() as conn:
                    left, due = store.next_due(conn, bid)
                    if not left:
                        store.finish(conn, bid)
                        return "cancelled" if self._cancelled else "done"
                wait = NAP if due is None else (due - store.now()).total_seconds()
                time.sleep(min(max(wait, 0.01), NAP))
                continue
            self._handle(c)

    def _conn(self):
        return self.ctx.session()

    def _stop(self) -> bool:
        t = time.monotonic()
        if t - self._last_poll >= POLL:
            self._last_poll = t
            with self._conn() as conn:
                self._cancelled = self._cancelled or store.cancel_requested(
                    conn, self.broadcast["id"]
                )
                by_status, _ = store.counts(conn, self.broadcast["id"])
            total = sum(by_status.values())
            done = total - by_status["pending"] - by_status["sending"]
            self.ctx.progress(done, total)
        if self._cancelled:
            return True
        if self.ctx.should_stop():
            self._cancelled = self.ctx.stopped_for == "cancel"
            return True
        return False

    def _cancel(self) -> None:
        self._cancel_applied = True
        bid = self.broadcast["id"]
        with self._conn() as conn:
            store.set_broadcast(conn, bid, cancel_requested=True)
            n = store.skip_pending(conn, bid, "cancelled")
            store.finish(conn, bid)
        if n:
            log.info("BROADCAST_CANCELLED broadcast=%s skipped=%d", bid, n)

    def _take_start(self) -> bool:
        """Take one start of the broadcast's own rate and of the business's; False (after a
        nap of at most `NAP`) when one is not allowed yet. The broadcast's is checked first
        and taken only with the business's, so a waiting broadcast wastes neither."""
        rates = self.ctx.limits.rates
        if self.own_rate != self.business_rate:
            wait = rates.peek(self.own_key, self.own_rate)
            if wait > 0:
                time.sleep(min(wait, NAP))
                return False
        wait = rates.acquire(self.business_key, self.business_rate)
        if wait > 0:
            time.sleep(min(wait, NAP))
            return False
        if self.own_rate != self.business_rate:
            # another sender of this broadcast may have taken the peeked start meanwhile:
            # taking it anyway overshoots the broadcast's own rate by at most one per sender
            rates.acquire(self.own_key, self.own_rate)
        return True

    # -- one recipient -----------------------------------------------------------------------

    def _message(self, c: store.Claim) -> Message:
        b = self.broadcast
        return Message(b["id"], c.id, b["business_id"], c.lead_id, b["channel"], c.phone, c.body)

    def _count(self, what: str) -> None:
        with self._lock:
            self.tally[what] = self.tally.get(what, 0) + 1

    def _handle(self, c: store.Claim) -> None:
        msg = self._message(c)
        if c.uncertain_since is not None:
            if not self._reconcile(c, msg):
                return
        elif self._cancelled:  # claimed as cancel was being applied: not started, not sent
            self._record(store.mark_skipped, c, "cancelled")
            return
        # the start is taken right before the call (after the claim), so the time between the
        # limiter's grant and the provider seeing the message stays as short as it can be
        while not self._take_start():
            if self._stop():  # hand the recipient back untouched; the loop cancels or stops
                self._record(store.mark_retry, c, None, 0.0, refund=True)
                return
        try:
            message_id = self.provider.send(msg)
        except RateLimited as exc:
            wait = self.ctx.limits.rates.backoff(
                self.business_key, exc.retry_after, self.business_rate
            )
            log.warning(
                "BROADCAST_RATE_LIMITED business=%s retry_after=%.1fs next_in=%.1fs",
                self.broadcast["business_id"],
                exc.retry_after,
                wait,
            )
            self._record(store.mark_retry, c, str(exc), 0.0, refund=True)
            self._count("rate_limited")
            return
        except PermanentError as exc:
            self._record(store.mark_failed, c, str(exc))
            self._count("failed")
            return
        except UncertainError as exc:
            self._retry(c, exc, uncertain=True)
            return
        except ProviderError as exc:
            self._retry(c, exc, uncertain=False)
            return
        except Exception as exc:  # a provider bug: the outcome is unknown, check before resending
            log.exception("provider %s raised", self.provider.name)
            self._retry(c, exc, uncertain=True)
            return
        self._record(store.mark_sent, c, message_id)
        self._count("sent")

    def _reconcile(self, c: store.Claim, msg: Message) -> bool:
        """For a recipient whose last attempt has no recorded outcome: True when it should be
        sent now; False when it was settled here (found at the provider, given up, cancelled)
        or must be checked again later. It never goes back to ``pending``: only a check
        decides."""
        assert c.uncertain_since is not None, "called only for an uncertain recipient"
        try:
            found = self.provider.reconcile(msg, c.uncertain_since)
        except Exception as exc:
            if isinstance(exc, RateLimited):
                self.ctx.limits.rates.backoff(
                    self.business_key, exc.retry_after, self.business_rate
                )
            error = f"check failed: {type(exc).__name__}: {exc}"
            self._record(store.mark_uncertain, c, error, retry_delay(self.cfg, c.attempts))
            self._count("retried")
            return False
        if found is not None:
            self._record(store.mark_sent, c, found)
            self._count("reconciled")
            log.info("BROADCAST_RECONCILED recipient=%s message=%s", c.id, found)
            return False
        if self._cancelled:
            self._record(store.mark_skipped, c, "cancelled", "outcome of the last attempt unknown")
            return False
        if c.attempts > self.cfg.max_attempts:
            self._record(store.mark_failed, c, "gave up: outcome unknown after retries")
            self._count("failed")
            return False
        return True

    def _retry(self, c: store.Claim, exc: Exception, *, uncertain: bool) -> None:
        error = f"{type(exc).__name__}: {exc}"
        if c.attempts >= self.cfg.max_attempts and not uncertain:
            self._record(store.mark_failed, c, f"gave up after {c.attempts} attempts: {error}")
            self._count("failed")
            return
        delay = retry_delay(self.cfg, c.attempts)
        mark = store.mark_uncertain if uncertain else store.mark_retry
        self._record(mark, c, error, delay)
        self._count("retried")
        log.info(
            "BROADCAST_RETRY recipient=%s attempt=%s in=%.1fs: %s", c.id, c.attempts, delay, error
        )

    def _record(self, mark, c: store.Claim, *args: Any, **kwargs: Any) -> None:
        """Record an outcome in its own short transaction, retried while PostgreSQL is away
        (the message is out: losing its record would mean sending it again)."""
        for attempt in range(10):
            try:
                with self._conn() as conn:
                    if not mark(conn, c, *args, **kwargs):
                        log.warning(
                            "recipient %s: claim lost before its outcome was recorded", c.id
                        )
                return
            except Exception:
                if attempt == 9:
                    raise
                log.warning("recording recipient %s failed; retrying", c.id, exc_info=True)
                time.sleep(exponential(attempt + 1, 0.2, 5.0))
