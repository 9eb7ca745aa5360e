"""Per-worker leases: how a dead worker's jobs are rescued in seconds, never run twice at once.

Each ``prosaas worker`` holds a row in ``prosaas_worker_leases`` whose ``expires_at`` (database
clock, so machines' clocks never matter) it pushes ``PROSAAS_LEASE_TTL`` seconds ahead every
second. The sweeper rescues the running jobs of any worker whose lease has lapsed: a SIGKILLed
worker's job resumes after about one TTL instead of the stale-heartbeat period.

Two things keep a job from running in two places at once:

- the rescue moves the job's fencing token on, so every later write of the old attempt is
  refused (``JOB LOST``);
- the worker fences itself: its handlers check, before each write and in ``should_stop()``,
  that the lease is still valid by the worker's own monotonic clock, counted from when the last
  renewal was *sent* with a margin, so it always lapses locally before it lapses in the
  database. A worker that was paused (SIGSTOP, a VM freeze) or cut off from the database stops
  its handler at the next call instead of carrying on.

A worker that sees its own lease lapse (it survived an outage longer than the TTL) hands its
running jobs back itself, without counting the attempt, then takes a fresh lease.
The lease state lives in shared memory, so a forking worker's work horse sees it too.
"""

from __future__ import annotations

import logging
import math
import mmap
import os
import socket
import struct
import threading
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, delete, func, update

from prosaas_core.errors import first_line
from prosaas_core.jobs.outage import Outage
from prosaas_core.jobs.store import T, c, utcnow

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from prosaas_core.runtime import Runtime

log = logging.getLogger("prosaas.worker")

LEASES = Table(
    "prosaas_worker_leases",
    MetaData(),
    Column("worker", String(200), primary_key=True),
    Column("host", String(255)),
    Column("pid", Integer),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("renewed_at", DateTime(timezone=True), nullable=False),
)
L = LEASES.c

#: the lease is trusted locally for this share of the TTL after the renewal was sent
LOCAL_SHARE = 0.8
#: a lapsed lease row is deleted this long after it lapsed (its jobs were rescued by then)
FORGET_AFTER = timedelta(minutes=5)


def db_now(conn: Connection) -> Any:
    """The database's clock on PostgreSQL (one clock for every machine); this process's clock
    on SQLite (one machine anyway)."""
    return func.now() if conn.dialect.name == "postgresql" else utcnow()


def lapsed_workers(conn: Connection):
    """A subquery: the names of workers whose lease has lapsed."""
    from sqlalchemy import select

    return select(L.worker).where(L.expires_at < db_now(conn))


def forget_lapsed(conn: Connection) -> None:
    conn.execute(delete(LEASES).where(L.expires_at < db_now(conn) - FORGET_AFTER))


def hand_back(
    conn: Connection,
    worker: str,
    job_id: int | None = None,
    *,
    refund: bool,
    lost: str = "its work horse died",
) -> list:
    """Put `worker`'s running jobs (or just `job_id`) back to queued, fence moved on; with
    `refund` the interrupted attempt does not count. Returns ``(id, queue, job_type)`` rows.

    Without `refund`, a job whose attempts are used up fails instead (``worker lost: <lost>
    and no attempts are left``): a job that kills its work horse every time (a poison job) must
    end, not loop."""
    now = utcnow()
    where = (c.status == "running") & (c.worker == worker)
    if job_id is not None:
        where = where & (c.id == job_id)
    moved = {"worker": None, "fence": c.fence + 1, "updated_at": now}
    if not refund:
        conn.execute(
            update(T)
            .where(where, c.attempts >= c.max_attempts)
            .values(
                status="failed",
                finished_at=now,
                error=f"worker lost: {lost} and no attempts are left",
                **moved,
            )
        )
    values = {"status": "queued", "run_after": None, **moved}
    if refund:
        values["attempts"] = c.attempts - 1
    rows = conn.execute(
        update(T).where(where).values(**values).returning(c.id, c.queue, c.job_type)
    ).all()
    return [tuple(r) for r in rows]


class SharedLease:
    """The lease as this worker (and its forked work horses) sees it: valid until a monotonic
    time, and a generation bumped each time it lapsed. In shared memory."""

    _FMT = "dq"

    def __init__(self) -> None:
        self._mem = mmap.mmap(-1, struct.calcsize(self._FMT))
        # no lease taken yet (the database was unreachable at start-up): nothing to fence by,
        # and nobody rescues by a lease row that does not exist
        self._write(math.inf, 0)

    def _write(self, until: float, gen: int) -> None:
        self._mem[:] = struct.pack(self._FMT, until, gen)

    def read(self) -> tuple[float, int]:
        return struct.unpack(self._FMT, self._mem[:])

    @property
    def generation(self) -> int:
        return self.read()[1]

    def valid(self, generation: int | None = None) -> bool:
        """True while the lease holds (and, given `generation`, has not lapsed since)."""
        until, gen = self.read()
        return time.monotonic() < until and (generation is None or generation == gen)


class WorkerLease:
    """Acquire, renew every second and release this worker's lease."""

    def __init__(self, rt: Runtime, name: str) -> None:
        self.rt = rt
        self.name = name
        self.ttl = rt.settings.lease_ttl
        self.interval = max(min(1.0, self.ttl / 4), 0.05)
        self.shared = SharedLease()
        self.outage = Outage("database", "worker lease", log)
        self._held = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def valid(self, generation: int | None = None) -> bool:
        return self.shared.valid(generation)

    @property
    def generation(self) -> int:
        return self.shared.generation

    def renew(self) -> None:
        """One renewal (the first acquires). A lease that had lapsed by this worker's clock is
        a new generation: the running jobs of the old one are handed back first."""
        from prosaas_core.db import autocommit

        sent = time.monotonic()
        until, gen = self.shared.read()
        lapsed = self._held and sent >= until
        with autocommit(self.rt.engine) as conn:
            if lapsed:
                self.shared._write(0.0, gen + 1)  # handlers of the old generation stop now
                gen += 1
                back = hand_back(conn, self.name, refund=True)
                log.warning(
                    "WORKER LEASE LAPSED name=%s: handed %d running job(s) back to the queue",
                    self.name,
                    len(back),
                )
                self._push(back)
            self._upsert(conn)
        self._held = True
        self.shared._write(sent + self.ttl * LOCAL_SHARE, gen)

    def _upsert(self, conn: Connection) -> None:
        now = db_now(conn)
        expires = now + timedelta(seconds=self.ttl)
        row = {
            "worker": self.name,
            "host": socket.gethostname()[:255],
            "pid": os.getpid(),
            "expires_at": expires,
            "renewed_at": now,
        }
        if conn.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]  # same API
        stmt = insert(LEASES).values(**row)
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[L.worker],
                set_={"expires_at": expires, "renewed_at": now, "pid": os.getpid()},
            )
        )

    def _push(self, rows: list) -> None:
        from prosaas_core.jobs.transport import push_many

        push_many(self.rt, rows)

    def start(self) -> None:
        if self.ttl <= 0:  # PROSAAS_LEASE_TTL=0: no lease; rescue by stale job heartbeat only
            log.warning(
                "WORKER LEASE off (PROSAAS_LEASE_TTL=0): rescues wait for a stale heartbeat"
            )
            return
        try:
            self.renew()
        except Exception as exc:  # taken by the loop as soon as the database answers
            self.outage.failed(exc)
        self._thread = threading.Thread(target=self._loop, name="worker-lease", daemon=True)
        self._thread.start()
        log.info(
            "WORKER LEASE held name=%s ttl=%gs (renewed every %gs)",
            self.name,
            self.ttl,
            self.interval,
        )

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.renew()
            except Exception as exc:  # the database is away: the lease lapses locally first
                self.outage.failed(exc)
            else:
                self.outage.ok()

    def stop(self) -> None:
        """Stop renewing and drop the lease: a clean exit is not a dead worker."""
        if self.ttl <= 0:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        from prosaas_core.db import autocommit

        try:
            with autocommit(self.rt.engine) as conn:
                # nothing should still run under our name; if something does, it goes back
                self._push(hand_back(conn, self.name, refund=True))
                conn.execute(delete(LEASES).where(L.worker == self.name))
        except Exception as exc:
            log.warning("could not drop the worker lease: %s", first_line(exc))
