"""The durable download tasks: create, claim, renew, finish. PostgreSQL is the source of truth.

Each operation is one named query of ``queries.sql``, run through the core's public
`prosaas_core.store.Db`: the same SQL and the same algorithm on PostgreSQL and SQLite, one
round trip each on an autocommit connection (``ctx.db()``). Every write a worker makes to a
claimed task carries the ``fence`` it got when it claimed it and requires
``status='running'``: once another worker has re-claimed the task (after a lease expired) or
the task was put back, the old worker's writes match no row and change nothing.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from prosaas_core.store import Db, Handle, Queries, Row, utcnow

#: the plugin's named statements
Q = Queries.load(Path(__file__).with_name("queries.sql"))


def now() -> datetime:
    return utcnow()


@dataclass(frozen=True)
class Task:
    """A claimed task, as the worker holding it sees it."""

    id: int
    business_id: int
    call_sid: str
    recording_sid: str
    recording_url: str
    duration: int | None
    attempts: int  # including the current one
    fence: int


def create_task(
    db: Handle,
    *,
    business_id: int,
    call_sid: str,
    recording_sid: str,
    recording_url: str,
    duration: int | None,
) -> int | None:
    """Insert a queued task; None when one exists for this recording already (idempotent)."""
    params = {"business_id": business_id, "call_sid": call_sid, "ts": now()}
    params |= {"recording_sid": recording_sid, "recording_url": recording_url}
    params["duration"] = duration
    return Db.of(db).scalar(Q.create_task, params)


def create_call(db: Handle, *, business_id: int, call_sid: str) -> None:
    """Create the call `call_sid` for `business_id` unless it exists."""
    Db.of(db).count(Q.create_call, {"business_id": business_id, "call_sid": call_sid, "ts": now()})


def claim_due(
    db: Handle,
    *,
    quota: Mapping[int, int],
    per_business: int,
    limit: int,
    worker: str,
    lease: float,
) -> list[Task]:
    """Claim up to `limit` due tasks for `worker`, oldest of every business first (round-robin),
    at most `per_business` of each business less its `quota` entry (what the worker holds).

    One statement (``claim_tasks``), one round trip on an autocommit connection."""
    if limit <= 0:
        return []
    ts = now()
    params = {
        "ts": ts,
        "lease_until": ts + timedelta(seconds=lease),
        "worker": worker,
        "per_business": per_business,
        "limit": limit,
        "held": json.dumps({str(b): n for b, n in quota.items() if n > 0}),
    }
    return _round_robin(Db.of(db).rows(Q.claim_tasks, params))


def _round_robin(rows: list[Row]) -> list[Task]:
    """Claimed rows (RETURNING has no order) in claiming order: each business's oldest first,
    then every business's second, and so on."""
    rows = sorted(rows, key=lambda r: (r[8], r[0]))  # run_after, id
    rank: Counter[int] = Counter()
    ranked = []
    for r in rows:
        rank[r[1]] += 1
        ranked.append((rank[r[1]], r[8], r[0], Task(*r[:8])))
    ranked.sort(key=lambda x: x[:3])
    return [x[3] for x in ranked]


def renew(db: Handle, tasks: list[Task], *, lease: float) -> set[int]:
    """Extend the leases of `tasks` (one statement); return the ids this worker no longer holds."""
    if not tasks:
        return set()
    params = {
        "lease_until": now() + timedelta(seconds=lease),
        "claims": json.dumps({str(t.id): t.fence for t in tasks}),
    }
    held = {r[0] for r in Db.of(db).rows(Q.renew_leases, params)}
    return {t.id for t in tasks} - held


def _claim(task: Task, ts: datetime | None = None) -> dict[str, object]:
    """The parameters naming a claimed task (and its call), stamped `ts` (now)."""
    return {
        "id": task.id,
        "fence": task.fence,
        "call_sid": task.call_sid,
        "business_id": task.business_id,
        "ts": ts or now(),
    }


def complete(db: Handle, task: Task, *, path: str, size: int) -> bool:
    """Record a finished download on the task and its call; False if the claim was lost.
    One atomic query (``complete_download``): the call is updated only if the task was."""
    params = _claim(task) | {"path": path, "size": size}
    params |= {"recording_sid": task.recording_sid, "duration": task.duration}
    return Db.of(db).one(Q.complete_download, params) is not None


def fail(db: Handle, task: Task, *, error: str) -> bool:
    """Record a permanent failure on the task and its call; False if the claim was lost."""
    return Db.of(db).one(Q.fail_download, _claim(task) | {"error": error}) is not None


def _requeue(db: Handle, task: Task, delay: float, error: str | None, refund: int) -> bool:
    """Back to queued, due after `delay` seconds, lease dropped; fenced on the claim."""
    ts = now()
    params = _claim(task, ts) | {"error": error, "refund": refund}
    params["run_after"] = ts + timedelta(seconds=delay)
    return Db.of(db).count(Q.requeue_task, params) == 1


def retry_later(db: Handle, task: Task, *, error: str, delay: float) -> bool:
    """Put the task back with backoff after a transient failure."""
    return _requeue(db, task, delay, error, 0)


def put_back(db: Handle, task: Task, *, delay: float = 0.0) -> bool:
    """Give a task back without counting the attempt (shutdown, no slot in time)."""
    return _requeue(db, task, delay, None, 1)


def store_transcript(db: Handle, task: Task, text: str) -> None:
    params = {"text": text, "call_sid": task.call_sid, "business_id": task.business_id}
    Db.of(db).count(Q.store_transcript, params | {"ts": now()})


def count_due(db: Handle) -> int:
    """Tasks due now that nobody holds: what ``prosaas doctor`` reports as pending."""
    return int(Db.of(db).scalar(Q.count_due, {"ts": now()}))
