"""The ``outbound-dialer`` service every worker runs: it places the calls of running campaigns
whenever a live-call slot of the business is free, within the campaign's call rate.

Nothing waits for a slot: the loop takes what is free now and sleeps on an event that a slot
release anywhere sets (core `ReleaseNotices`; the final status callback frees the slot), that a
new or resumed campaign sets (a notice on ``WAKE_CHANNEL``), or that a slow timer sets (slots
that simply expired, retries coming due). `calls.create` runs on a small thread pool.

Each turn, per running campaign: slot (`Slots.acquire`, key per business, the campaign's
`max_concurrent`, leased for ``OUTBOUND_CALLS_SLOT_TIMEOUT``) -> rate (`RateLimiter.acquire`, key
per business) -> claim a target (a fresh attempt token, the slot token stored with it) -> dial.
Whatever step refuses, what was taken before it is given back.

Every ``OUTBOUND_CALLS_SWEEP_INTERVAL`` each worker also:

- reconciles claims whose sid was never written (a worker killed inside ``calls.create``): the
  provider's calls to that number from that caller id since the claim are listed; a call found
  is adopted, otherwise the target is pending again. Only claims older than
  ``OUTBOUND_CALLS_RECONCILE_AFTER`` (3 x the REST timeout), so a claimer still waiting for its
  answer is never second-guessed;
- settles live calls whose final callback never came within the slot timeout, from the
  provider's view of the call;
- at most every ORPHAN_EVERY, releases the live-call slots of the businesses of running or
  paused campaigns that no dialing or live target holds (their final callback could not release
  them: Redis was away, or the API process died between its commit and the release; or a
  dialer died between taking slots and claiming with them) once they are older than
  ORPHAN_AFTER (a minute), so they come back then instead of after the slot timeout. Safe
  against a slow claim: a dialer renews its slots after its claim commits and gives the claim
  back if one is gone, and the sweep reads the owners again after listing the slots and
  releases a slot only if its lease is still the one it listed (`Slots.release_unrenewed`):
  whichever comes second of the renewal and the release fails;
- marks finished campaigns.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from prosaas_core.limits import Rate, ReleaseNotices, Slot
from prosaas_outbound_calls import attempts, campaigns
from prosaas_outbound_calls.config import OutboundConfig
from prosaas_outbound_calls.provider import Provider, ProviderNotConfigured
from prosaas_outbound_calls.tables import campaigns as C
from prosaas_outbound_calls.tables import targets as T

log = logging.getLogger("prosaas.outbound_calls.dialer")

WAKE_CHANNEL = "prosaas:outbound_calls:wake"
#: most batches one campaign gets per turn (others get theirs before it goes round again)
PER_TURN = 10
#: most targets claimed in one transaction
BATCH = 20
#: seconds a slot must have been held (or half the slot timeout, if less) before the sweep may
#: take it for an orphan: a dialer claims with its slots within milliseconds of taking them
ORPHAN_AFTER = 60.0
#: seconds between two looks for orphaned slots by one dialer
ORPHAN_EVERY = 30.0


def rate_of(calls_per_second: float) -> Rate:
    """A campaign's call rate as a core `Rate`: one call per 1/cps seconds, bursts of a tenth
    of a second's worth (at least 1)."""
    count = max(1, round(calls_per_second * 1000))
    return Rate(count, 1000.0, max(1, int(calls_per_second / 10)))


def wake(redis: Any, origin: str = "api") -> None:
    """Tell every dialer to look now (a campaign was created, resumed or prepared further)."""
    try:
        redis.publish(WAKE_CHANNEL, f"outbound_calls:wake {origin}")
    except Exception as exc:  # the slow timer covers it
        log.warning("could not publish a wake-up (%s)", type(exc).__name__)


class Dialer:
    """One worker's dialer: `turn()` dials what is allowed now, `sweep()` tidies."""

    def __init__(self, ctx: Any, cfg: OutboundConfig, provider: Provider) -> None:
        self.ctx, self.cfg, self.provider = ctx, cfg, provider
        self.slots, self.rates = ctx.limits.slots, ctx.limits.rates
        self.origin = f"dialer:{socket.gethostname()}:{os.getpid()}"
        self.event = threading.Event()
        self.pool = ThreadPoolExecutor(cfg.dial_threads, thread_name_prefix="outbound-dial")
        self.inflight = 0
        self.lock = threading.Lock()
        self._campaigns: list[Any] | None = None
        self._refresh = threading.Event()
        #: per slot key: release notices seen, and that count when the key was found full
        self._releases: dict[str, int] = {}
        self._full: dict[str, int] = {}
        #: campaigns that had nothing due: skipped until the next refresh
        self._dry: set[int] = set()
        #: per slot key: until when it is peeked at before slots are taken (rate-bound lately)
        self._rate_bound: dict[str, float] = {}
        self._orphans_at = float("-inf")  # monotonic time of the last look for orphaned slots

    # -- dialing ------------------------------------------------------------------------------

    def running(self) -> list[Any]:
        """The running campaigns, read again when a wake notice (created, resumed) or the slow
        timer asked for it: a claim checks the campaign's state itself, so a paused or
        cancelled campaign still in this list dials nothing."""
        if self._campaigns is not None and not self._refresh.is_set():
            return self._campaigns
        self._refresh.clear()
        with self.ctx.session() as s:
            self._campaigns = list(
                s.execute(
                    select(
                        C.c.id,
                        C.c.business_id,
                        C.c.caller_id,
                        C.c.twiml_url,
                        C.c.max_concurrent,
                        C.c.calls_per_second,
                        C.c.record,
                        C.c.machine_detection,
                    )
                    .where(C.c.state == "running")
                    .order_by(C.c.id)
                )
            )
        return self._campaigns

    def refresh(self) -> None:
        """Read the running campaigns again and look at every business (the slow timer, a
        wake notice): slots may have expired, campaigns may have come or gone."""
        self._refresh.set()
        with self.lock:
            self._full.clear()
            self._dry.clear()
        self.event.set()

    def released(self, key: str) -> None:
        """A slot of `key` was released somewhere (a release notice): worth looking again."""
        with self.lock:
            self._releases[key] = self._releases.get(key, 0) + 1
        self.event.set()

    def turn(self) -> float:
        """Dial what the slots and rates allow now; the seconds until it is worth looking again
        (a release notice may wake the loop sooner)."""
        delay = self.cfg.poll_interval
        for camp in self.running():
            if self.ctx.stop_event.is_set():
                break
            delay = min(delay, self._campaign_turn(camp))
        return delay

    def _campaign_turn(self, camp: Any) -> float:
        """Claim what the campaign may dial now, in batches, in one transaction each: the due
        targets are locked first (so no slot is taken for a campaign with nothing to dial, or
        no longer running), then as many slots as are free for them (one round trip), then
        the rate for that many (or one), then the claims in one statement.

        A business found full is not asked again until one of its slots is released (its
        release notice) or the slow timer fires (slots that expired); a campaign with nothing
        due is not looked at again before a wake notice or the slow timer."""
        key, rate = campaigns.slot_key(camp.business_id), rate_of(camp.calls_per_second)
        for _ in range(PER_TURN):
            with self.lock:
                room = self.cfg.dial_threads * 2 - self.inflight
                seen = self._releases.get(key, 0)
                if self._full.get(key) == seen or camp.id in self._dry:
                    return self.cfg.poll_interval  # a notice or the slow timer wakes us
            if room <= 0:
                return self.cfg.poll_interval  # a dial ending sets the event
            # only a key the rate held back lately is peeked at first: there taking slots and
            # giving them back costs more, elsewhere the peek is a wasted round trip
            if time.monotonic() < self._rate_bound.get(key, 0.0):
                wait = self.rates.peek(key, rate)
                if wait > 0:
                    return wait
            claimed: list[tuple[attempts.Claimed, Slot]] = []
            wait = 0.0
            with self.ctx.session() as s:
                ids = attempts.lock_due(s, camp.id, min(room, rate.burst, BATCH))
                if not ids:
                    with self.lock:
                        self._dry.add(camp.id)
                    return self.cfg.poll_interval
                held = self.slots.acquire_many(
                    key, camp.max_concurrent, self.cfg.slot_timeout, len(ids)
                )
                if not held:
                    with self.lock:
                        self._full[key] = seen
                    return self.cfg.poll_interval  # all held: a release notice wakes us
                wait = self.rates.acquire(key, rate, cost=len(held))
                if wait > 0 and len(held) > 1:
                    for slot in held[1:]:
                        self.slots.release(slot, notify=False)
                    held = held[:1]
                    wait = self.rates.acquire(key, rate)
                if wait > 0:
                    self._rate_bound[key] = time.monotonic() + 1.0
                    self.slots.release(held[0], notify=False)
                    return wait
                by_token = {slot.token: slot for slot in held}
                for c in attempts.claim_locked(
                    s, camp.id, ids[: len(held)], [slot.token for slot in held]
                ):
                    claimed.append((c, by_token.pop(c.slot_token)))
            for slot in by_token.values():  # not claimed after all (gone meanwhile)
                self.slots.release(slot, notify=False)
            for c, slot in claimed:  # dialed once the claims are committed
                if not self._still_held(slot):
                    # released meanwhile as an orphan (the claim took longer than the sweep's
                    # grace), or Redis is away: no slot, no call
                    with self.ctx.session() as s:
                        attempts.give_back(s, c.id, c.token)
                    log.warning("OUTBOUND_SLOT_LOST_BEFORE_DIAL target=%s", c.id)
                    continue
                log.info(
                    "OUTBOUND_CALL_CLAIMED campaign=%s target=%s attempt=%s active=%s/%s",
                    camp.id,
                    c.id,
                    c.attempt,
                    slot.active,
                    camp.max_concurrent,
                )
                with self.lock:
                    self.inflight += 1
                self.pool.submit(self._dial, camp, c, slot)
            if len(ids) < min(room, rate.burst, BATCH):
                return self.cfg.poll_interval  # nothing more is due now
        return 0.0

    def _still_held(self, slot: Slot) -> bool:
        """Renew a slot whose claim has just committed: False when it is gone (an orphan sweep
        took it while the claim was slow) or Redis cannot say (the sweep releases it later)."""
        from redis.exceptions import RedisError

        try:
            return self.slots.renew(slot, self.cfg.slot_timeout)
        except RedisError as exc:
            log.warning("slot renewal before dialing failed: %s", type(exc).__name__)
            return False

    def _dial(self, camp: Any, c: attempts.Claimed, slot: Slot) -> None:
        from twilio.base.exceptions import TwilioRestException

        try:
            info = self.provider.create(
                to=c.phone,
                from_=camp.caller_id,
                url=camp.twiml_url,
                business_id=c.business_id,
                target_id=c.id,
                token=c.token,
                record=camp.record,
                machine_detection=camp.machine_detection,
            )
        except TwilioRestException as exc:
            self._refused(camp, c, slot, exc)
        except Exception as exc:
            # no answer (timeout, connection dropped): the call may exist; the sweep
            # reconciles the claim against the provider before anything is retried
            log.warning("OUTBOUND_CALL_UNCERTAIN target=%s attempt=%s: %s", c.id, c.attempt, exc)
        else:
            outcome = "recorded"
            if not attempts.record_sid_fast(
                self.ctx.runtime.engine, c, info.sid, info.status, camp.caller_id
            ):
                with self.ctx.session() as s:
                    outcome = attempts.record_sid(s, c, info.sid, info.status, camp.caller_id)
            if outcome == "adopted":
                self.slots.renew(slot, self.cfg.slot_timeout, readd=True)
            log.info(
                "OUTBOUND_CALL_PLACED campaign=%s target=%s call_sid=%s%s",
                camp.id,
                c.id,
                info.sid,
                "" if outcome == "recorded" else f" ({outcome})",
            )
        finally:
            with self.lock:
                self.inflight -= 1
            self.event.set()

    def _refused(self, camp: Any, c: attempts.Claimed, slot: Slot, exc: Any) -> None:
        """The provider answered with an error. A 4xx placed no call: a 429 gives the target
        back and makes every dialer of the business wait a second; any other 4xx fails it.
        A 5xx may hide a call that was created: the sweep reconciles it, like a timeout."""
        error = f"{exc.status} {getattr(exc, 'code', '')} {getattr(exc, 'msg', exc)}".strip()
        if exc.status >= 500:
            log.warning("OUTBOUND_CALL_UNCERTAIN target=%s attempt=%s: %s", c.id, c.attempt, error)
            return
        with self.ctx.session() as s:
            if exc.status == 429:
                key = campaigns.slot_key(c.business_id)
                self.rates.backoff(key, 1.0, rate_of(camp.calls_per_second))
                attempts.give_back(s, c.id, c.token, error=error)
            else:
                attempts.fail_attempt(s, c.id, c.token, error)
        self.slots.release(slot)
        log.warning("OUTBOUND_CALL_REFUSED target=%s: %s", c.id, error)

    # -- tidying ------------------------------------------------------------------------------

    def sweep(self) -> None:
        from redis.exceptions import RedisError

        self.reconcile_claims()
        self.settle_lost()
        with self.ctx.session() as s:
            done = campaigns.finish(s)
        for cid in done:
            log.info("OUTBOUND_CAMPAIGN_FINISHED campaign=%s", cid)
        try:
            self.release_orphans()
        except RedisError as exc:  # the next look tries again
            log.warning("orphaned-slot sweep skipped: %s", type(exc).__name__)

    def release_orphans(self) -> None:
        """Release the slots of running or paused campaigns' businesses that no dialing or live
        target holds, once held for the grace (ORPHAN_AFTER, or half the slot timeout); at most
        every ORPHAN_EVERY. The owners are read once before the slots are listed and again for
        the candidates, and a candidate is released only if its lease is the one listed: a
        dialer renews its slots once its claim has committed (`_campaign_turn`), so a claim
        committed after the second read renews after the listing, and either that renewal
        or the release fails. The grace only keeps the sweep off slots about to be claimed."""
        now = time.monotonic()
        if now - self._orphans_at < ORPHAN_EVERY:
            return
        self._orphans_at = now
        timeout = self.cfg.slot_timeout
        grace = min(ORPHAN_AFTER, timeout / 2)
        with self.ctx.session() as s:
            businesses = list(
                s.execute(
                    select(C.c.business_id).where(C.c.state.in_(("running", "paused"))).distinct()
                ).scalars()
            )
            owned = self._owned(s, T.c.business_id.in_(businesses)) if businesses else set()
        candidates = []
        for business_id in businesses:
            key = campaigns.slot_key(business_id)
            for token, held in self.slots.holders(key).items():
                # "job:" tokens are core flow control's (a job type's slots of the same key)
                old = timeout - held.left >= grace
                if token not in owned and not token.startswith("job:") and old:
                    candidates.append((business_id, key, token, held))
        if not candidates:
            return
        with self.ctx.session() as s:  # claimed meanwhile (a claim slower than the grace)
            owned = self._owned(s, T.c.slot_token.in_([t for _, _, t, _ in candidates]))
        for business_id, key, token, held in candidates:
            if token not in owned and self.slots.release_unrenewed(key, token, held):
                log.warning(
                    "OUTBOUND_SLOT_ORPHAN_RELEASED business=%s lease_age=%.0fs",
                    business_id,
                    timeout - held.left,
                )

    @staticmethod
    def _owned(s: Any, where: Any) -> set[str]:
        """Slot tokens of dialing or live targets matching `where`."""
        return set(
            s.execute(
                select(T.c.slot_token).where(
                    T.c.status.in_(("dialing", "live")), T.c.slot_token.is_not(None), where
                )
            ).scalars()
        )

    def _stale(self, s: Any, *, with_sid: bool, older: float) -> list[Any]:
        cutoff = campaigns.now() - timedelta(seconds=older)
        sid = T.c.call_sid.is_not(None) if with_sid else T.c.call_sid.is_(None)
        statuses = ("dialing", "live") if with_sid else ("dialing",)
        return list(
            s.execute(
                select(T, C.c.caller_id)
                .join(C, C.c.id == T.c.campaign_id)
                .where(T.c.status.in_(statuses), sid, T.c.claimed_at < cutoff)
                .order_by(T.c.claimed_at)
                .limit(20)
                .with_for_update(of=T, skip_locked=True)
            )
        )

    def reconcile_claims(self) -> None:
        """Claims with no sid, older than the reconcile delay: adopt the call the provider has,
        or give the target back."""
        with self.ctx.session() as s:
            for row in self._stale(s, with_sid=False, older=self.cfg.reconcile_after):
                found = self.provider.calls_to(row.phone, row.caller_id, row.claimed_at)
                known = set(
                    s.execute(
                        select(T.c.call_sid).where(T.c.call_sid.in_([f.sid for f in found]))
                    ).scalars()
                )
                mine = [f for f in found if f.sid not in known]
                if not mine:
                    attempts.give_back(s, row.id, row.attempt_token, error="no call placed")
                    self.slots.release(Slot(campaigns.slot_key(row.business_id), row.slot_token, 0))
                    log.warning("OUTBOUND_CLAIM_RECONCILED target=%s found=none", row.id)
                    continue
                call = mine[0]
                s.execute(
                    update(T)
                    .where(T.c.id == row.id, T.c.attempt_token == row.attempt_token)
                    .values(call_sid=call.sid, status="live", dialed_at=row.claimed_at)
                )
                s.flush()
                self._apply(s, row, call.sid, call.status)
                log.warning(
                    "OUTBOUND_CLAIM_RECONCILED target=%s found=%s status=%s",
                    row.id,
                    call.sid,
                    call.status,
                )

    def settle_lost(self) -> None:
        """Live calls past the slot timeout whose final callback never came."""
        with self.ctx.session() as s:
            for row in self._stale(s, with_sid=True, older=self.cfg.slot_timeout):
                info = self.provider.fetch(row.call_sid)
                if info is None:
                    status = "failed"
                elif info.status in attempts.FINAL:
                    status = info.status
                else:
                    # still live by the provider: it counts against the limit again
                    key = campaigns.slot_key(row.business_id)
                    if row.slot_token:
                        self.slots.renew(
                            Slot(key, row.slot_token, 0), self.cfg.slot_timeout, readd=True
                        )
                    continue
                self._apply(s, row, row.call_sid, status)
                log.warning(
                    "OUTBOUND_CALLBACK_LOST target=%s call_sid=%s settled=%s",
                    row.id,
                    row.call_sid,
                    status,
                )

    def _apply(self, s: Any, row: Any, call_sid: str, status: str | None) -> None:
        if status not in attempts.KNOWN:
            return
        applied = attempts.apply_status(s, row.id, row.attempt_token, call_sid, status)
        if applied.readd:
            self.slots.renew(Slot(*applied.readd, 0), self.cfg.slot_timeout, readd=True)
        if applied.release:
            self.slots.release(Slot(applied.release[0], applied.release[1], 0))


def run(ctx: Any) -> None:
    """The service loop (``Service("outbound-dialer", run)``)."""
    cfg = OutboundConfig.from_settings(ctx.settings)
    try:
        provider = Provider(cfg)
    except ProviderNotConfigured as exc:
        # nothing can be dialed; stay up (and say why) rather than crash-loop
        ctx.log.warning("OUTBOUND DIALER IDLE: %s", exc)
        ctx.stop_event.wait()
        return
    dialer = Dialer(ctx, cfg, provider)

    def on_release(key: str) -> None:
        if key.startswith("outbound_calls:"):
            dialer.released(key)

    def on_wake(_key: str) -> None:
        dialer.refresh()

    notices = [
        ReleaseNotices(ctx.redis, dialer.slots.channel, dialer.origin, on_release).start(
            "outbound-slot-notices"
        ),
        ReleaseNotices(ctx.redis, WAKE_CHANNEL, dialer.origin, on_wake).start(
            "outbound-wake-notices"
        ),
    ]
    ctx.log.info("Outbound dialer loop started (origin=%s)", dialer.origin)
    next_sweep = next_poll = 0.0
    try:
        while not ctx.stop_event.is_set():
            dialer.event.clear()
            if time.monotonic() >= next_poll:
                # the slow timer: what no notice announces (expired slots, retries due,
                # campaigns whose wake notice was missed)
                dialer.refresh()
                next_poll = time.monotonic() + cfg.poll_interval
            if time.monotonic() >= next_sweep:
                dialer.sweep()
                next_sweep = time.monotonic() + cfg.sweep_interval
            delay = dialer.turn()
            delay = min(delay, max(0.0, min(next_sweep, next_poll) - time.monotonic()))
            if delay > 0:
                dialer.event.wait(delay)
    finally:
        for n in notices:
            n.stop()
        dialer.pool.shutdown(wait=True, cancel_futures=False)
        ctx.log.info("Outbound dialer loop stopped")


def pending(ctx: Any) -> int:
    """Targets waiting to be dialed in running campaigns (for `prosaas doctor`)."""
    from sqlalchemy import func

    with ctx.session() as s:
        return int(
            s.execute(
                select(func.count())
                .select_from(T.join(C, C.c.id == T.c.campaign_id))
                .where(C.c.state == "running", T.c.status == "pending")
            ).scalar_one()
        )
