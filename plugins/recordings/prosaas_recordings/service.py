"""The ``recording-worker`` service: claims due download tasks and downloads them on a pool.

One loop per worker process (a thread started by ``prosaas worker``):

* claim: mark due tasks running under a lease (oldest of each business first; twice a
  business's slot count per worker, twice ``worker_threads`` in all) and queue them per
  business. Claiming ahead keeps the database off the path between a slot coming free and the
  next download;
* start: a queued task takes a download thread only once it holds one of its business's slots
  in Redis (shared by all workers) and the worker has a download to spare (``worker_threads``
  at once), so a task waiting for a busy business never blocks one whose business has a free
  slot. Slots are tried for when tasks are queued (a business's in one call), when another
  worker announces a release (`wakeup`), and every SLOT_RETRY (slots that expire); a task that
  gets none within two leases is given back;
* hand over: when a download's body is in, its slot is freed before the file is synced,
  renamed and recorded, and if the business has a task queued here the slot passes straight
  to it (`SlotManager.handoff`: one Redis call, never free in between, no notice) and it starts
  from the releasing thread. The pool has twice ``worker_threads`` threads, so the next
  download never waits for a thread still finishing a file. A worker keeps passing a
  business's slots on while it has tasks of it queued; another worker's queued tasks of that
  business get a slot when this one runs out (or are given back after two leases);
* bursts: every pool thread starts with the service (with its HTTP client), and a worker that
  claimed more than it has downloads for wakes the others to claim now (`ReleaseNotices.nudge`,
  at most once a poll interval) rather than at their next poll;
* every write (claim, renew, complete, retry, give back) is one named query on the service's
  autocommit ``ctx.db()``: one round trip each, no BEGIN/COMMIT;
* renew the task leases and the slots every third of a lease; a download whose slot or lease
  was lost is stopped and its task given back;
* on ``stop_event``: stop the downloads, give their tasks back (claimable at once), release
  their slots, return.

The runbook greps the log lines below; keep their markers and fields.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prosaas_recordings import store
from prosaas_recordings.config import RecordingsConfig
from prosaas_recordings.download import (
    DownloadAborted,
    DownloadError,
    Limits,
    fetch,
)
from prosaas_recordings.httpclient import HttpClient
from prosaas_recordings.slots import Slot, SlotManager
from prosaas_recordings.wakeup import ReleaseNotices

if TYPE_CHECKING:
    from prosaas_core import ServiceContext
    from prosaas_core.store import Db

STOP_GRACE = 2.0  # seconds in-flight downloads get to notice a stop before being handed back
SWEEP_EVERY = 60.0
# Seconds between tries for the slots of queued businesses when no release was announced: covers
# slots of dead workers expiring (they come back within a lease) and notices missed.
SLOT_RETRY = 0.5


QUEUED, STARTING, RUNNING, DONE = "queued", "starting", "running", "done"


@dataclass
class InFlight:
    """A claimed task: queued for a slot, then downloading on a thread with its slot."""

    task: store.Task
    slot: Slot | None = None
    abort: threading.Event = field(default_factory=threading.Event)
    abort_reason: str = "shutdown"
    slot_released: bool = False
    state: str = QUEUED  # changed under RecordingWorker.lock
    queued_at: float = field(default_factory=time.monotonic)

    def stop(self, reason: str) -> None:
        if not self.abort.is_set():
            self.abort_reason = reason
            self.abort.set()


class RecordingWorker:
    """The state of one running ``recording-worker`` service."""

    def __init__(self, ctx: ServiceContext, cfg: RecordingsConfig) -> None:
        self.ctx, self.cfg, self.log = ctx, cfg, ctx.log
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{ctx.name}"
        self.slots = SlotManager(
            ctx.redis, limit=cfg.slots_per_business, ttl=cfg.lease_seconds, origin=self.worker_id
        )
        self.notices = ReleaseNotices(
            ctx.redis,
            self.slots.channel,
            self.worker_id,
            lambda b: self.start_ready([b]),
            self._claim_now,
        )
        self.last_nudge = -1e9  # monotonic time of this worker's last nudge
        self.limits = Limits(
            allowed_hosts=cfg.allowed_hosts,
            allow_http=cfg.allow_http,
            max_bytes=cfg.max_bytes,
            connect_timeout=cfg.connect_timeout,
            read_timeout=cfg.read_timeout,
            total_timeout=cfg.download_timeout,
        )
        self.auth = (
            (cfg.account_sid, cfg.auth_token) if cfg.account_sid and cfg.auth_token else None
        )
        self.inflight: dict[int, InFlight] = {}  # every claimed task, queued or running
        self.queued: dict[int, deque[InFlight]] = {}  # business -> tasks waiting for a slot
        # downloads holding a slot on a thread, at most worker_threads: from the start until
        # the slot is released (when the body has arrived, before its file and row are done)
        self.running = 0
        self.cap_reached = False  # a slot may be free but the worker had no download to spare
        self.stopping = False
        self.lock = threading.Lock()
        self.wake = threading.Event()
        # Twice the downloads: a thread still syncing, renaming and recording a finished file
        # never keeps the next download (already holding its slot) waiting for a thread.
        self.pool = ThreadPoolExecutor(2 * cfg.worker_threads, thread_name_prefix="recording")
        self.local = threading.local()
        self.transcribe = _transcriber(ctx)
        self.renew_every = cfg.lease_seconds / 3
        # A finished download wakes the loop to claim more only when a thread would otherwise
        # idle or this many are free: fewer, larger claims while the pool is busy.
        self.claim_batch = max(1, cfg.worker_threads // 4)
        self.drained = False  # the last claim found nothing: wait for the poll to look again

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> None:
        cfg, stop = self.cfg, self.ctx.stop_event
        self.log.info(
            "RECORDING WORKER STARTED worker=%s slots_per_business=%d threads=%d hosts=%s",
            self.worker_id, cfg.slots_per_business, cfg.worker_threads,
            ",".join(sorted(cfg.allowed_hosts)),
        )  # fmt: skip
        self.log.info("   This worker processes recording downloads and transcription")
        self.notices.start()
        self._warm_pool()
        self.log.info("Recording worker loop started")
        last_renew = last_sweep = last_retry = time.monotonic()
        try:
            while not stop.is_set():
                self.wake.clear()
                now = time.monotonic()
                if now - last_renew >= self.renew_every:
                    self.renew()
                    last_renew = now
                if now - last_sweep >= SWEEP_EVERY:
                    self.sweep_partials()
                    last_sweep = now
                if now - last_retry >= SLOT_RETRY:
                    self.expire_queued()
                    self.start_ready(self.waiting_businesses())
                    last_retry = now
                self.claim()
                wait = min(cfg.poll_interval, self.renew_every)
                if self.waiting_businesses():
                    wait = min(wait, SLOT_RETRY)
                self.wake.wait(wait)
        finally:
            self.shutdown()

    def claim(self) -> int:
        """Claim due tasks for the free (and soon free) threads, at most twice a business's slot
        count of each business in this worker; queue them on the pool."""
        # Claim up to twice what runs at once, so a freed thread or slot finds its next task
        # already here instead of waiting for a database round trip.
        with self.lock:
            free = 2 * self.cfg.worker_threads - len(self.inflight)
            quota = Counter(i.task.business_id for i in self.inflight.values())
        if free <= 0:
            return 0
        per_business = 2 * self.cfg.slots_per_business
        with self.db() as db:
            tasks = store.claim_due(
                db,
                quota=dict(quota),
                per_business=per_business,
                limit=free,
                worker=self.worker_id,
                lease=self.cfg.lease_seconds,
            )
        # Nothing due: finished downloads stop waking the loop until the next poll finds some.
        # (Nothing because this worker holds its share of every business is not "drained".)
        self.drained = not tasks and not any(n >= per_business for n in quota.values())
        for task in tasks:
            self.log.info(
                "WORKER_PICKED job_type=download_only call_sid=%s business_id=%s "
                "recording_sid=%s retry=%d",
                task.call_sid, task.business_id, task.recording_sid, task.attempts - 1,
            )  # fmt: skip
            inf = InFlight(task)
            with self.lock:
                self.inflight[task.id] = inf
                self.queued.setdefault(task.business_id, deque()).append(inf)
        self.start_ready(dict.fromkeys(t.business_id for t in tasks))
        with self.lock:
            capped = self.cap_reached
        if tasks and capped:
            self._nudge()
        return len(tasks)

    def _warm_pool(self) -> None:
        """Start every pool thread, each with its HTTP client, before the first claim: a burst
        of due tasks then starts its downloads at once, not one thread creation (each waiting
        for the GIL behind the downloads already starting) after another."""
        n = 2 * self.cfg.worker_threads
        ready = threading.Barrier(n + 1)

        def warm() -> None:
            self._http()
            ready.wait(10)

        for _ in range(n):
            self.pool.submit(warm)
        try:
            ready.wait(10)
        except threading.BrokenBarrierError:  # a slow start-up: threads come as needed
            self.log.warning("download threads slow to start; starting them as needed")

    def _nudge(self) -> None:
        """This worker claimed more than it has downloads for: wake the others to claim the
        rest of what is due now, not at their next poll. At most once a poll interval."""
        now = time.monotonic()
        if now - self.last_nudge < self.cfg.poll_interval:
            return
        self.last_nudge = now
        try:
            self.notices.nudge()
        except Exception:
            self.log.exception("claim nudge failed; the others claim at their next poll")

    def _claim_now(self) -> None:
        """Another worker has due work it cannot start: claim at once."""
        self.drained = False
        self.wake.set()

    # -- slots and threads ----------------------------------------------------------------

    def waiting_businesses(self) -> list[int]:
        with self.lock:
            return [b for b, q in self.queued.items() if q]

    def start_ready(self, businesses: Iterable[int]) -> None:
        """Start the queued downloads of `businesses` that can get a slot now, while the
        worker has downloads to spare: the slots of a business in one Redis call, every
        business's taken before any download starts (a burst of starting downloads would
        otherwise hold up, for the GIL, the slots of the businesses still to come)."""
        got: list[tuple[list[InFlight], list[Slot]]] = []
        try:
            for business in businesses:
                with self.lock:
                    if self.running >= self.cfg.worker_threads:
                        self.cap_reached = True
                        break
                infs = self._reserve(business, self.cfg.slots_per_business)
                if not infs:
                    continue
                try:
                    slots = self.slots.acquire_many(business, len(infs))
                except Exception:
                    self.log.exception("slot acquire failed; retrying later")
                    slots = []
                got.append((infs, slots))
        finally:
            for infs, slots in got:
                self._start_all(infs, slots)

    def _reserve(self, business: int, n: int) -> list[InFlight]:
        """Take up to `n` of the business's queued tasks (oldest first) off its queue for a
        start, as far as the worker has threads; each must then go through `_started`."""
        with self.lock:
            queue = self.queued.get(business)
            if self.stopping or not queue:
                return []
            free = self.cfg.worker_threads - self.running
            if free < min(n, len(queue)):
                self.cap_reached = True  # _release tries again when a download ends
            infs = [queue.popleft() for _ in range(min(n, len(queue), max(free, 0)))]
            for inf in infs:
                inf.state = STARTING  # reserved: nobody else starts or drops it now
            self.running += len(infs)
            return infs

    def _start_all(self, infs: list[InFlight], slots: list[Slot]) -> None:
        """Start reserved tasks with the slots got for them (the oldest first); those left
        without one go back to the head of their queue in their order."""
        for inf, slot in zip(infs, slots, strict=False):
            self._started(inf, slot)
        for inf in reversed(infs[len(slots) :]):
            self._started(inf, None)

    def _started(self, inf: InFlight, slot: Slot | None) -> bool:
        """Hand a reserved task with its slot to a thread; without one, queue it again (at the
        head: it is the oldest) or, stopped meanwhile, finish it. True when started."""
        with self.lock:
            if slot is not None and not self.stopping:
                inf.slot, inf.state = slot, RUNNING
            else:
                self.running -= 1
                if not inf.abort.is_set() and not self.stopping:
                    inf.state = QUEUED
                    self.queued.setdefault(inf.task.business_id, deque()).appendleft(inf)
                    return False
                inf.state = DONE
        if inf.state == RUNNING:
            self.pool.submit(self.process, inf)
            return True
        if slot is not None:  # stopping: never logged as acquired, give it back quietly
            self._release_quietly(slot)
        self._drop(inf, inf.abort_reason if inf.abort.is_set() else "shutdown")
        return False

    def drop_queued(self, inf: InFlight, reason: str) -> bool:
        """Finish a task still waiting for a slot (stop, lost lease, no slot in time); False
        when it already runs (or is being started): then it is stopped instead."""
        with self.lock:
            if inf.state != QUEUED:
                inf.stop(reason)
                return False
            self.queued[inf.task.business_id].remove(inf)
            inf.state = DONE
        inf.stop(reason)
        self._drop(inf, reason)
        return True

    def _drop(self, inf: InFlight, reason: str) -> None:
        """A task that never started: give it back (unless its lease is lost) and forget it."""
        try:
            if reason == "no_slot":
                self._put_back(inf, delay=self.cfg.poll_interval)
            elif reason != "lease_lost":
                self._put_back(inf)
        finally:
            with self.lock:
                self.inflight.pop(inf.task.id, None)
            self.wake.set()

    def expire_queued(self) -> None:
        """Give back tasks that waited two leases for a slot: another worker may have one."""
        cutoff = time.monotonic() - 2 * self.cfg.lease_seconds
        with self.lock:
            old = [i for q in self.queued.values() for i in q if i.queued_at < cutoff]
        for inf in old:
            self.drop_queued(inf, "no_slot")

    def _release_quietly(self, slot: Slot) -> None:
        try:
            self.slots.release(slot)
        except Exception:
            self.log.exception("slot release failed; it expires on its own")

    def db(self) -> AbstractContextManager[Db]:
        """The service's connection for one named query: autocommit, one round trip."""
        return self.ctx.db()

    def renew(self) -> None:
        """Extend task leases and slots of in-flight downloads; stop those that were lost."""
        with self.lock:
            infs = [i for i in self.inflight.values() if not i.abort.is_set()]
        if not infs:
            return
        with self.db() as db:
            lost = store.renew(db, [i.task for i in infs], lease=self.cfg.lease_seconds)
        for inf in infs:
            if inf.task.id in lost:
                self.log.warning("WORKER_LEASE_LOST call_sid=%s", inf.task.call_sid)
                self.drop_queued(inf, "lease_lost")
            elif inf.slot is not None and not self.slots.renew(inf.slot):
                self.log.warning(
                    "WORKER_SLOT_LOST call_sid=%s business_id=%s",
                    inf.task.call_sid, inf.task.business_id,
                )  # fmt: skip
                inf.stop("slot_lost")

    # -- one download ---------------------------------------------------------------------

    def process(self, inf: InFlight) -> None:
        task, cfg = inf.task, self.cfg
        dest = cfg.call_path(task.business_id, task.call_sid)
        reason, size, recorded = "error", 0, False
        try:
            assert inf.slot is not None  # started with its slot (start_ready)
            self.log.info(
                "WORKER_SLOT_ACQUIRED call_sid=%s business_id=%s active=%d/%d",
                task.call_sid, task.business_id, inf.slot.active, cfg.slots_per_business,
            )  # fmt: skip
            if inf.abort.is_set():
                raise DownloadAborted()
            tmp = self._partial(task)
            self.log.info(
                "DOWNLOAD_START call_sid=%s recording_sid=%s attempt=%d",
                task.call_sid, task.recording_sid, task.attempts,
            )  # fmt: skip
            started = time.monotonic()
            size = fetch(
                media_url(task.recording_url),
                dest,
                tmp=tmp,
                auth=self.auth,
                limits=self.limits,
                abort=inf.abort,
                http=self._http(),
                # The slot bounds concurrent transfers from Twilio: free it (or pass it to the
                # next download) as soon as the body is in, before the file is synced, renamed
                # and recorded.
                on_received=lambda: self._release(inf, "success"),
            )
            self.log.info(
                "WORKER_DOWNLOAD_DONE call_sid=%s file=%s bytes=%d duration_ms=%d",
                task.call_sid, dest.name, size, (time.monotonic() - started) * 1000,
            )  # fmt: skip
            reason = "success"
            with self.db() as db:
                recorded = store.complete(db, task, path=str(dest), size=size)
            if not recorded:
                self.log.warning("WORKER_LEASE_LOST call_sid=%s (claimed again)", task.call_sid)
        except DownloadAborted:
            reason = self._aborted(inf)
        except DownloadError as exc:
            if inf.abort.is_set():  # e.g. a read timed out after the stop was asked for
                reason = self._aborted(inf)
            else:
                self._failed(task, exc.reason, retryable=exc.retryable)
        except Exception as exc:  # a bug or a database error: retried like a transient failure
            self.log.exception("DOWNLOAD_ERROR call_sid=%s", task.call_sid)
            reason = "error"
            self._failed(task, f"{type(exc).__name__}: {exc}"[:500], retryable=True)
        finally:
            self._release(inf, reason)
            self._finish(inf)
        if recorded and self.transcribe is not None:
            self._transcribe(task, dest, size)

    def _failed(self, task: store.Task, error: str, *, retryable: bool) -> None:
        with self.db() as db:
            if retryable and task.attempts < self.cfg.max_attempts:
                delay = self.cfg.retry_delay(task.attempts)
                store.retry_later(db, task, error=error, delay=delay)
                self.log.warning(
                    "DOWNLOAD_FAILED call_sid=%s attempt=%d error=%r retry_in=%.1fs",
                    task.call_sid, task.attempts, error, delay,
                )  # fmt: skip
                return
            if retryable:
                error = f"gave up after {task.attempts} attempts: {error}"
            store.fail(db, task, error=error)
        self.log.error("RECORDING_FAILED call_sid=%s recording_sid=%s reason=%r",
                       task.call_sid, task.recording_sid, error)  # fmt: skip

    def _aborted(self, inf: InFlight) -> str:
        """A download stopped on purpose: give the task back unless it is no longer ours."""
        if inf.abort_reason != "lease_lost":
            self._put_back(inf)
        return inf.abort_reason

    def _put_back(self, inf: InFlight, *, delay: float = 0.0) -> None:
        with self.db() as db:
            store.put_back(db, inf.task, delay=delay)

    def _release(self, inf: InFlight, reason: str) -> None:
        """Release the download's slot, exactly once (the loop may do it at stop). When the
        business has a download queued here, the slot passes straight to it (`handoff`: one
        Redis call, no notice), which starts at once from this thread."""
        with self.lock:
            if inf.slot is None or inf.slot_released:
                return
            inf.slot_released = True
            self.running -= 1  # this download is over: its place goes to the next one
            retry, self.cap_reached = self.cap_reached, False
        task = inf.task
        self.log.info(
            "WORKER_RELEASE_SLOT call_sid=%s business_id=%s reason=%s",
            task.call_sid, task.business_id, reason,
        )  # fmt: skip
        successor = self._reserve(task.business_id, 1)
        passed: list[Slot] = []
        try:
            if successor:
                _, slot = self.slots.handoff(inf.slot)
                passed = [slot] if slot is not None else []
                # held after this release, before the successor took the slot
                active = passed[0].active - 1 if passed else self.slots.active(task.business_id)
            else:
                _, active = self.slots.release(inf.slot)
        except Exception:
            self.log.exception("slot release failed; it expires on its own")
            active = -1
        self.log.info(
            "RECORDING_SLOT_RELEASED call_sid=%s business_id=%s reason=%s active_after=%d/%d",
            task.call_sid, task.business_id, reason, active, self.cfg.slots_per_business,
        )  # fmt: skip
        if successor:
            self._start_all(successor, passed)
            if passed and passed[0].active < self.cfg.slots_per_business:
                self.start_ready([task.business_id])  # more came free meanwhile
        if retry:  # a business may have a free slot that no download place was left for
            self.start_ready(self.waiting_businesses())

    def _finish(self, inf: InFlight) -> None:
        """The download's thread is free again."""
        with self.lock:
            self.inflight.pop(inf.task.id, None)
            inf.state = DONE
            held = len(self.inflight)
        threads = self.cfg.worker_threads
        if not self.drained and (held < threads or 2 * threads - held >= self.claim_batch):
            self.wake.set()

    def _transcribe(self, task: store.Task, path: Path, size: int) -> None:
        call = {
            "call_sid": task.call_sid,
            "business_id": task.business_id,
            "recording_sid": task.recording_sid,
            "duration": task.duration,
            "bytes": size,
        }
        if self.transcribe is None:
            return
        try:
            text = self.transcribe(path=path, call=call)
            if text:
                with self.db() as db:
                    store.store_transcript(db, task, str(text))
                self.log.info("TRANSCRIPT_STORED call_sid=%s chars=%d", task.call_sid, len(text))
        except Exception:
            self.log.exception("TRANSCRIBE_FAILED call_sid=%s", task.call_sid)

    # -- files, http, shutdown ------------------------------------------------------------

    def _partial(self, task: store.Task) -> Path:
        """This claim's temporary file; removes the ones of earlier claims of the task (a
        worker that died mid-download)."""
        part_dir = self.cfg.partial_dir
        # Only a task claimed before (fence > 1) can have left files; skip the directory scan.
        for old in part_dir.glob(f"task{task.id}.*.part") if task.fence > 1 else ():
            try:
                if int(old.name.split(".")[1]) < task.fence:
                    old.unlink(missing_ok=True)
            except (ValueError, IndexError):
                continue
        return part_dir / f"task{task.id}.{task.fence}.part"

    def sweep_partials(self) -> None:
        """Remove temporary files nobody has written to for longer than a download may last."""
        cutoff = time.time() - self.cfg.download_timeout - self.cfg.lease_seconds
        for part in self.cfg.partial_dir.glob("*.part"):
            try:
                if part.stat().st_mtime < cutoff:
                    part.unlink(missing_ok=True)
            except FileNotFoundError:
                continue

    def _http(self):
        """One pooled HTTP client per download thread (keep-alive connections)."""
        http = getattr(self.local, "http", None)
        if http is None:
            http = self.local.http = HttpClient()
        return http

    def shutdown(self) -> None:
        """Stop downloads and hand their tasks back, claimable at once; release slots."""
        with self.lock:
            self.stopping = True
            infs = list(self.inflight.values())
        for inf in infs:
            self.drop_queued(inf, "shutdown")  # or stops it when running
        deadline = time.monotonic() + STOP_GRACE
        while time.monotonic() < deadline:
            with self.lock:
                if not self.inflight:
                    break
            time.sleep(0.02)
        with self.lock:
            stuck = list(self.inflight.values())
        for inf in stuck:  # blocked in a read: give the task back from here
            try:
                self._put_back(inf)
            finally:
                self._release(inf, "shutdown")
                with self.lock:
                    self.inflight.pop(inf.task.id, None)
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.notices.stop()
        self.log.info("Recording worker loop stopped (%d downloads handed back)", len(infs))


def media_url(recording_url: str) -> str:
    """The MP3 of a Twilio recording: its RecordingUrl + ``.mp3``."""
    return recording_url if recording_url.endswith(".mp3") else recording_url + ".mp3"


def _transcriber(ctx: ServiceContext) -> Callable[..., Any] | None:
    """The ``prosaas_transcribe`` hook when some installed plugin implements it, else None."""
    pm = ctx.runtime.pm
    from prosaas_recordings.hookspecs import ensure_hookspecs

    ensure_hookspecs(pm)
    hook = pm.hook.prosaas_transcribe
    return hook if hook.get_hookimpls() else None


def run(ctx: ServiceContext) -> None:
    """Service entry point: runs until ``ctx.stop_event`` is set."""
    RecordingWorker(ctx, RecordingsConfig.from_settings(ctx.settings)).run()


def pending(ctx: ServiceContext) -> int:
    """Due download tasks nobody holds (for ``prosaas doctor``)."""
    with ctx.db() as db:
        return store.count_due(db)
