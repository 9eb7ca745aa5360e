"""Per-business flow control of job types: ``concurrency_per_business`` and
``rate_per_business``, with per-business overrides from ``prosaas_flow_limits``.

A limited job needs, per (job type, business) key, a concurrency slot (``prosaas_core.limits``;
its token is ``job:<id>``, so taking it twice is one slot) and a rate token. It is checked at
three places:

- **admission** (enqueue, and the waker), before the RQ push: the slot is taken; for a rate, a
  token must be free now and the job takes one of the key's `burst` admission places. A job
  that gets neither is **parked**: ``queued`` in PostgreSQL with ``parked`` saying why, and not
  pushed, so RQ only holds a business's work that can start now. That is what keeps one
  business's 10,000 jobs from standing in front of another's 5;
- **start** (the worker, right after the claim): the slot is taken again (a no-op when admitted,
  so a retry or a sweeper re-push is limited too) and the rate token is taken, so starts, not
  pushes, keep to the rate; refused, the claimed job is parked (the attempt is not counted);
- **release** (after the outcome is written): the slot goes back and, when jobs of the key are
  parked, a release notice wakes a waker.

The waker (one thread per worker) admits parked jobs of a key, oldest first, as long as slots
and rate allow: on a release notice from any worker, at the time a rate window opens, and on a
scan of every parked key once per lease (what no notice announces: slots of dead workers
expiring, notices lost while Redis was away, jobs parked by the API).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from prosaas_core.limits import Limits, Rate, ReleaseNotices, Slot, parse_rate

if TYPE_CHECKING:
    from prosaas_core.jobs.store import Claim
    from prosaas_core.registry import JobType
    from prosaas_core.runtime import Runtime

log = logging.getLogger("prosaas.flow")

#: Redis key raised while a key has parked jobs: releases announce themselves only then
PARKED_FLAG = "prosaas:flow:parked:"
#: Redis key a waker holds while it admits a key's parked jobs (one waker per key at a time)
WAKE_LOCK = "prosaas:flow:waking:"
#: slot-key prefix of a rate-limited key's admission places (admitted, not yet started)
ADMIT = "admit:"
#: parked jobs of one key a waker looks at per pass
WAKE_BATCH = 50


def flow_key(job_type: str, business_id: int) -> str:
    return f"{job_type}:{business_id}"


def split_key(key: str) -> tuple[str, int] | None:
    job_type, _, business = key.rpartition(":")
    try:
        return job_type, int(business)
    except ValueError:
        return None


@dataclass(frozen=True)
class Policy:
    """The limits in force for one business and job type."""

    concurrency: int | None
    rate: Rate | None


@dataclass(frozen=True)
class Refusal:
    """Why a job can't start now, and in how many seconds to look again."""

    kind: str  # "concurrency" | "rate"
    reason: str
    retry_after: float


@dataclass
class Held:
    """What a running limited job holds: its slot (renewed by the job heartbeat)."""

    key: str
    slot: Slot | None


def _horizon(rate: Rate) -> float:
    """How early (seconds) a rate-limited job may be admitted ahead of its token: one steady
    interval, at most 0.2 s, so a worker never waits on a token for longer than that."""
    return min(rate.interval, 0.2)


class FlowControl:
    """One runtime's flow control: policies (with cached overrides), admission, parking."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.lease = rt.settings.flow_lease
        self.refresh_every = max(0.2, self.lease / 3)
        self._overrides: dict[tuple[int, str], tuple[int | None, str | None]] = {}
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()
        self._warned = False
        self.waker: Waker | None = None

    @property
    def admission(self) -> Limits:
        """The slots and rates an enqueue's admission uses: the runtime's `request_limits`, so
        a request waits on a hung Redis no longer than its push would (``PROSAAS_PUSH_TIMEOUT``),
        not the 10 s of the runtime's own client."""
        return self.rt.request_limits

    # -- policies ----------------------------------------------------------------------------

    def _refresh(self) -> None:
        from sqlalchemy import select
        from sqlalchemy.exc import SQLAlchemyError

        from prosaas_core.models import FlowLimit

        t = FlowLimit.__table__
        try:
            with self.rt.engine.connect() as conn:
                rows = conn.execute(
                    select(t.c.business_id, t.c.job_type, t.c.concurrency, t.c.rate)
                ).all()
        except SQLAlchemyError as exc:  # unmigrated or unreachable: the job types' own limits
            if not self._warned:
                log.warning("flow limit overrides unavailable: %s", type(exc).__name__)
                self._warned = True
            rows = None
        if rows is not None:
            self._overrides = {(b, jt): (conc, rate) for b, jt, conc, rate in rows}
        self._loaded_at = time.monotonic()

    def policy(self, jt: JobType, business_id: int) -> Policy | None:
        """The limits for `business_id` and `jt`, or None when it is not limited. Overrides
        are re-read every third of a lease, so a change takes effect within one lease."""
        if time.monotonic() - self._loaded_at >= self.refresh_every:
            with self._lock:
                if time.monotonic() - self._loaded_at >= self.refresh_every:
                    self._refresh()
        conc, rate = jt.concurrency_per_business, jt.rate_per_business
        override = self._overrides.get((business_id, jt.name))
        if override is not None:
            conc = override[0] if override[0] is not None else conc
            rate = override[1] if override[1] is not None else rate
        if conc is None and rate is None:
            return None
        try:
            parsed = parse_rate(rate) if rate else None
        except Exception:  # a bad override must not stop the job type: keep its own rate
            log.error("ignoring invalid rate override %r for business %s", rate, business_id)
            parsed = parse_rate(jt.rate_per_business) if jt.rate_per_business else None
        return Policy(conc, parsed)

    # -- admission and start -----------------------------------------------------------------

    def admit(
        self,
        job_id: int,
        business_id: int,
        jt: JobType,
        pol: Policy,
        *,
        limits: Limits | None = None,
    ) -> Refusal | None:
        """Before a limited job is pushed: its concurrency slot, and for a rate, a rate token
        free now plus one of the key's `burst` admission places (so RQ never holds more than a
        burst of a business's rate-limited jobs). A Refusal says the job is to be parked.
        `limits`: the runtime's own by default (the waker rides out a slow Redis); an enqueue
        passes `admission`."""
        key = flow_key(jt.name, business_id)
        limits = limits or self.rt.limits
        slots, token = limits.slots, f"job:{job_id}"
        slot = None
        if pol.concurrency is not None:
            slot = slots.acquire(key, pol.concurrency, self.lease, token=token)
            if slot is None:
                n = pol.concurrency
                return Refusal("concurrency", f"concurrency: {n}/{n} slots held", self.lease)
        if pol.rate is None:
            return None
        wait = limits.rates.peek(key, pol.rate)
        # a token due within the push-to-start time is as good as free: admitting only at
        # zero would leave that latency between every two starts
        if wait <= _horizon(pol.rate) and slots.acquire(
            ADMIT + key, pol.rate.burst, self.lease, token=token
        ):
            return None
        if slot is not None:
            slots.release(slot, notify=False)
        if wait > _horizon(pol.rate):
            return Refusal("rate", f"rate: {pol.rate} reached", wait)
        # the next start of an admitted job frees a place and wakes the wakers
        return Refusal("rate", f"rate: {pol.rate}, a burst already admitted", self.lease)

    def enter(self, claim: Claim, pol: Policy, *, slot_at: float | None = None) -> Held | Refusal:
        """At the start of a claimed job: its slot (already held when it was admitted) and a
        rate token, taken now so that starts, not pushes, keep to the rate. `slot_at` is when
        admission took the slot: within a third of a lease of it the slot is trusted as held
        (one round trip fewer per job), since its lease still has two thirds to run and the job
        heartbeat renews it within one third. Later, it is taken again: it may have expired."""
        key, token = flow_key(claim.job_type, claim.business_id), f"job:{claim.id}"
        slots = self.rt.limits.slots
        slot = None
        fresh = slot_at is not None and 0 <= time.time() - slot_at < self.lease / 3
        if pol.concurrency is not None and fresh:
            slot = Slot(key, token, 0)
        elif pol.concurrency is not None:
            slot = slots.acquire(key, pol.concurrency, self.lease, token=token)
            if slot is None:
                n = pol.concurrency
                return Refusal("concurrency", f"concurrency: {n}/{n} slots held", self.lease)
        if pol.rate is not None:
            rates = self.rt.limits.rates
            wait = rates.acquire(key, pol.rate)
            for _ in range(3):  # due in a moment (it was admitted early): wait for it here
                if not 0 < wait <= _horizon(pol.rate):
                    break
                time.sleep(wait)
                wait = rates.acquire(key, pol.rate)
            # the admission place is no longer needed either way: the next job may be admitted
            _, _, told = slots.release_noticed(
                Slot(ADMIT + key, token, 0), only_if=PARKED_FLAG + key
            )
            if told and self.waker is not None:  # notices skip their own origin: tell ours
                self.waker.poke(key)
            if wait > 0:
                if slot is not None:
                    slots.release(slot, only_if=PARKED_FLAG + key)
                return Refusal("rate", f"rate: {pol.rate} reached", wait)
        return Held(key, slot)

    def renew(self, held: Held) -> None:
        """Keep a running job's slot. Re-added when Redis lost it: the job is running, so it
        counts (how the limit recovers from a flush)."""
        if held.slot is not None:
            self.rt.limits.slots.renew(held.slot, self.lease, readd=True)

    def release(self, held: Held) -> None:
        """Give the slot back; parked jobs of the key hear about it."""
        if held.slot is None:
            return
        _, _, told = self.rt.limits.slots.release_noticed(held.slot, only_if=PARKED_FLAG + held.key)
        if told and self.waker is not None:  # jobs of the key are parked: admit the next
            self.waker.poke(held.key)

    # -- parking -----------------------------------------------------------------------------

    def parked(self, key: str, refusal: Refusal, limits: Limits | None = None) -> None:
        """A job of `key` was parked: raise the key's flag so releases announce themselves,
        and tell the wakers (this process's at once, others' through the notice channel).
        `limits` as for `admit`: an enqueue passes `admission`."""
        slots = (limits or self.rt.limits).slots
        r = slots.redis
        ttl_ms = int(self.lease * 2000)
        with r.pipeline(transaction=False) as p:
            p.set(PARKED_FLAG + key, 1, px=ttl_ms)
            if refusal.kind == "rate":  # nobody releases anything: say when to look
                p.publish(slots.channel, f"{key} {slots.origin}")
            p.execute()
        if self.waker is not None:
            self.waker.poke(key, refusal.retry_after)

    def park_new(self, job_id: int, key: str, refusal: Refusal) -> None:
        """Park a job that was just inserted and not admitted (enqueue)."""
        from sqlalchemy import update

        from prosaas_core.db import autocommit
        from prosaas_core.jobs.store import T, c, utcnow

        now = utcnow()
        with autocommit(self.rt.engine) as conn:
            conn.execute(
                update(T)
                .where(c.id == job_id, c.status == "queued")
                .values(
                    parked=refusal.reason[:200],
                    run_after=now + timedelta(seconds=refusal.retry_after),
                    updated_at=now,
                )
            )
        self.parked(key, refusal, self.admission)

    # -- waking ------------------------------------------------------------------------------

    def parked_keys(self) -> list[tuple[str, int, Any]]:
        """(job type, business id, earliest look-again time) of every key with parked jobs."""
        from sqlalchemy import func, select

        from prosaas_core.jobs.store import c

        with self.rt.engine.connect() as conn:
            rows = conn.execute(
                select(c.job_type, c.business_id, func.min(c.run_after))
                .where(c.parked.is_not(None), c.status == "queued")
                .group_by(c.job_type, c.business_id)
            ).all()
        return [tuple(r) for r in rows]

    def wake(self, key: str) -> float | None:
        """Admit parked jobs of `key`, oldest first, while slots and rate allow. Returns the
        seconds until it is worth trying again (None: nothing parked, or not for this worker
        to decide now)."""
        from sqlalchemy import select, update

        from prosaas_core.db import autocommit
        from prosaas_core.jobs.store import T, c, utcnow
        from prosaas_core.jobs.transport import push

        parts = split_key(key)
        if parts is None:
            return None
        job_type, business_id = parts
        jt = self.rt.registry.job_types.get(job_type)
        r = self.rt.redis
        if jt is None or not r.set(WAKE_LOCK + key, 1, nx=True, px=2000):
            return None if jt is None else 0.02  # another waker's pass: look right after it
        try:
            pol = self.policy(jt, business_id)
            with self.rt.engine.connect() as conn:
                found = conn.execute(
                    select(c.id)
                    .where(
                        c.job_type == job_type,
                        c.business_id == business_id,
                        c.parked.is_not(None),
                        c.status == "queued",
                    )
                    .order_by(c.id)
                    .limit(WAKE_BATCH)
                ).scalars()
                ids = list(found)
            if not ids:
                r.delete(PARKED_FLAG + key)
                return None
            r.set(PARKED_FLAG + key, 1, px=int(self.lease * 2000))
            woken: list[tuple[int, str]] = []
            again = 0.0 if len(ids) == WAKE_BATCH else 0.05
            slot_at = time.time() if pol is not None and pol.concurrency is not None else None
            # one connection for the pass; the pushes wait until its writes are committed
            with autocommit(self.rt.engine) as conn:
                for job_id in ids:
                    if pol is not None:
                        refusal = self.admit(job_id, business_id, jt, pol)
                        if refusal is not None:
                            again = refusal.retry_after
                            break
                    woke = conn.execute(
                        update(T)
                        .where(c.id == job_id, c.parked.is_not(None), c.status == "queued")
                        .values(parked=None, run_after=None, updated_at=utcnow())
                        .returning(c.queue)
                    ).first()
                    if woke is not None:
                        woken.append((job_id, woke[0]))
            for job_id, queue in woken:
                push(self.rt, job_id, queue, timeout=jt.timeout, slot_at=slot_at)
            return again
        finally:
            r.delete(WAKE_LOCK + key)


class Waker:
    """The thread of one worker that admits parked jobs (see the module docstring)."""

    def __init__(self, flow: FlowControl) -> None:
        self.flow = flow
        self._due: dict[str, float] = {}  # key -> monotonic time to look at it
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        slots = flow.rt.limits.slots
        self._notices = ReleaseNotices(flow.rt.redis, slots.channel, slots.origin, self.poke)

    def poke(self, key: str, after: float = 0.0) -> None:
        """Look at `key` within `after` seconds."""
        key = key.removeprefix(ADMIT)
        at = time.monotonic() + max(after, 0.0)
        with self._cond:
            if at < self._due.get(key, float("inf")):
                self._due[key] = at
                self._cond.notify()

    def start(self) -> Waker:
        self.flow.waker = self
        self._notices.start("flow-notices")
        self._thread = threading.Thread(target=self._loop, name="flow-waker", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify()
        self._notices.stop()
        if self._thread is not None:
            self._thread.join(5)
        self.flow.waker = None

    def _scan(self) -> None:
        from prosaas_core.jobs.store import utcnow

        now_wall = utcnow()
        for job_type, business_id, look_at in self.flow.parked_keys():
            after = 0.0
            if look_at is not None:
                if look_at.tzinfo is None:  # SQLite gives naive UTC
                    look_at = look_at.replace(tzinfo=now_wall.tzinfo)
                after = max(0.0, (look_at - now_wall).total_seconds())
            self.poke(flow_key(job_type, business_id), min(after, self.flow.lease))

    def _loop(self) -> None:
        next_scan = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_scan:
                next_scan = now + self.flow.lease
                try:
                    self._scan()
                except Exception as exc:  # database away: next scan
                    log.warning("flow waker scan failed: %s", type(exc).__name__)
            with self._cond:
                due = [k for k, t in self._due.items() if t <= time.monotonic()]
                for k in due:
                    del self._due[k]
                if not due:
                    soonest = min(self._due.values(), default=next_scan)
                    self._cond.wait(max(0.0, min(soonest, next_scan) - time.monotonic()))
                    continue
            for key in due:
                try:
                    again = self.flow.wake(key)
                except Exception as exc:
                    log.warning("flow waker failed for %s: %s", key, type(exc).__name__)
                    again = 1.0
                if again is not None:
                    self.poke(key, again)


def summary(rt: Runtime) -> list[dict[str, Any]]:
    """Per business and job type with limits in force and work active: slots held / limit,
    parked jobs by reason, rate used in the current window / limit. For doctor, metrics and
    ``jobs list``."""
    from sqlalchemy import func, select

    from prosaas_core.jobs.store import c

    flow = rt.flow
    types = rt.registry.job_types
    with rt.engine.connect() as conn:
        rows = conn.execute(
            select(c.job_type, c.business_id, c.status, c.parked, func.count())
            .where(c.status.in_(("queued", "running")))
            .group_by(c.job_type, c.business_id, c.status, c.parked)
        ).all()
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for job_type, business_id, status, parked, n in rows:
        jt = types.get(job_type)
        pol = flow.policy(jt, business_id) if jt is not None else None
        if pol is None:
            continue
        item = out.setdefault(
            (job_type, business_id),
            {
                "job_type": job_type,
                "business_id": business_id,
                "concurrency": pol.concurrency,
                "rate": str(pol.rate) if pol.rate else None,
                "running": 0,
                "queued": 0,
                "parked": 0,
                "parked_reasons": {},
                "_rate": pol.rate,
            },
        )
        if status == "running":
            item["running"] += n
        elif parked:
            item["parked"] += n
            reasons = item["parked_reasons"]
            reasons[parked] = reasons.get(parked, 0) + n
        else:
            item["queued"] += n
    items = [out[k] for k in sorted(out)]
    keys = [flow_key(i["job_type"], i["business_id"]) for i in items]
    held = rt.request_limits.slots.active_many(keys)
    rated = [(k, i["_rate"]) for k, i in zip(keys, items, strict=True) if i["_rate"]]
    used = dict(zip([k for k, _ in rated], rt.request_limits.rates.used(rated), strict=True))
    for key, item in zip(keys, items, strict=True):
        item.pop("_rate")
        item["slots_held"] = held[key]
        item["rate_used"] = used.get(key)
    return items


def set_override(
    rt: Runtime,
    business_id: int,
    job_type: str,
    *,
    concurrency: int | None,
    rate: str | None,
) -> dict[str, Any]:
    """Create or replace a business's override of a job type's limits (validated)."""
    from prosaas_core.errors import ConfigError, NotFoundError
    from prosaas_core.models import Business, FlowLimit

    rt.registry.job_type(job_type)  # UnknownJobTypeError
    if concurrency is not None and concurrency < 1:
        raise ConfigError("concurrency must be >= 1")
    if rate is not None:
        rate = str(parse_rate(rate))
    with rt.session() as s:
        if s.get(Business, business_id) is None:
            raise NotFoundError(f"business {business_id} not found")
        row = s.get(FlowLimit, (business_id, job_type))
        if row is None:
            row = FlowLimit(business_id=business_id, job_type=job_type)
            s.add(row)
        row.concurrency, row.rate = concurrency, rate
    return {
        "business_id": business_id,
        "job_type": job_type,
        "concurrency": concurrency,
        "rate": rate,
    }


def list_overrides(rt: Runtime) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from prosaas_core.models import FlowLimit

    with rt.session() as s:
        rows = s.scalars(select(FlowLimit).order_by(FlowLimit.business_id, FlowLimit.job_type))
        return [
            {
                "business_id": r.business_id,
                "job_type": r.job_type,
                "concurrency": r.concurrency,
                "rate": r.rate,
            }
            for r in rows
        ]


def clear_override(rt: Runtime, business_id: int, job_type: str) -> bool:
    from prosaas_core.models import FlowLimit

    with rt.session() as s:
        row = s.get(FlowLimit, (business_id, job_type))
        if row is None:
            return False
        s.delete(row)
        return True
