"""Fenced state changes of one job row: the named queries of ``queries.sql``, run through
`prosaas_core.store.Db`.

Every write after the claim carries the claim's fencing token (``fence``): the sweeper bumps it
when it rescues a job, so a worker that was declared dead can never overwrite the outcome.
Each function is one statement (one database round trip on an autocommit connection), the
same SQL on PostgreSQL and SQLite. `conn` is a `Db` or anything `Db.of` wraps.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from prosaas_core.models import BackgroundJob
from prosaas_core.store import Db, Handle, Queries, Query, Row, loads, utcnow

__all__ = [
    "Claim",
    "Outcome",
    "Q",
    "claim",
    "adopt",
    "touch",
    "finish",
    "finish_and_claim",
    "requeue",
    "park",
    "utcnow",
    "fenced_write",
    "fenced_statement",
    "fenced_params",
    "is_ours",
    "settle",
]

T = BackgroundJob.__table__
c = T.c
#: the named statements on background_jobs
Q = Queries.load(Path(__file__).with_name("queries.sql"))


@dataclass(frozen=True, slots=True)
class Claim:
    """What a successful claim returns: enough to run the job without another read."""

    id: int
    business_id: int
    job_type: str
    queue: str
    payload: Any
    state: Any
    attempt: int
    max_attempts: int
    fence: int
    cancel_requested: bool

    @classmethod
    def from_row(cls, row: Row) -> Claim:
        """From a row of ``claim_job`` or ``adopted_claim`` (JSON as text)."""
        i, b, jt, q, payload, state, attempt, max_attempts, fence, cancel = row
        return cls(i, b, jt, q, loads(payload), loads(state), attempt, max_attempts, fence,
                   bool(cancel))  # fmt: skip


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _error(text: str | None) -> str | None:
    """An error text PostgreSQL can store: text columns cannot hold NUL, which a handler's
    exception message may well carry (binary input); shown as ``\\x00``."""
    return text.replace("\x00", "\\x00") if text else text


def claim(conn: Handle, job_id: int, worker: str) -> Claim | None:
    """Atomically move a queued row to running; None when it is not claimable (already claimed,
    finished, cancelled, or a retry whose backoff has not elapsed): a duplicate delivery."""
    row = Db.of(conn).one(Q.claim_job, {"id": job_id, "worker": worker, "now": utcnow()})
    return Claim.from_row(row) if row is not None else None


def adopt(conn: Handle, job_id: int, worker: str) -> Claim | None:
    """The claim of `job_id` when the row is running under `worker`'s name (a claim whose
    answer was lost with its connection), else None."""
    row = Db.of(conn).one(Q.adopted_claim, {"id": job_id, "worker": worker})
    return Claim.from_row(row) if row is not None else None


def touch(
    conn: Handle,
    job_id: int,
    fence: int,
    *,
    processed: int | None = None,
    total: int | None = None,
    state: Any = None,
    set_state: bool = False,
) -> bool | None:
    """Heartbeat, with progress and/or a checkpoint. Returns the row's ``cancel_requested``, or
    None when the write was refused (the job is no longer ours)."""
    params = {"id": job_id, "fence": fence, "now": utcnow(), "processed": processed}
    params["total"] = total
    if set_state:
        params["state"] = _json(state)
    row = Db.of(conn).one(Q.checkpoint_job if set_state else Q.touch_job, params)
    return None if row is None else bool(row[0])


def is_ours(conn: Handle, job_id: int, fence: int) -> bool:
    """Whether the attempt holding `fence` still holds the running job."""
    return Db.of(conn).one(Q.job_is_ours, {"id": job_id, "fence": fence}) is not None


def settle(conn: Handle, job_id: int, fence: int, state: str) -> bool | None:
    """A durable heartbeat that checks the row still holds `state` (the JSON of the attempt's
    last checkpoint): True when it does, False when a database crash lost it, None when the
    job is no longer ours."""
    params = {"id": job_id, "fence": fence, "now": utcnow(), "state": state}
    row = Db.of(conn).one(Q.settle_job, params)
    return None if row is None else bool(row[0])


@dataclass(frozen=True, slots=True)
class Outcome:
    """A job's outcome as `finish` writes it (succeeded, failed or cancelled)."""

    job_id: int
    fence: int
    status: str
    result: Any = None
    error: str | None = None
    processed: int | None = None
    total: int | None = None
    #: when the handler ended; the write may come a little later (`finish_and_claim`)
    at: Any = None

    def params(self) -> dict[str, Any]:
        return {
            "id": self.job_id,
            "fence": self.fence,
            "status": self.status,
            "result": _json(self.result),
            "error": _error(self.error),
            "now": self.at or utcnow(),
            "processed": self.processed,
            "total": self.total,
        }


def finish(
    conn: Handle,
    job_id: int,
    fence: int,
    status: str,
    *,
    result: Any = None,
    error: str | None = None,
    processed: int | None = None,
    total: int | None = None,
) -> bool:
    """Record the outcome (succeeded, failed or cancelled). False when refused."""
    outcome = Outcome(job_id, fence, status, result, error, processed, total)
    return write_outcome(conn, outcome)


def write_outcome(conn: Handle, outcome: Outcome) -> bool:
    """`finish` for an `Outcome`. False when refused."""
    return Db.of(conn).count(Q.finish_job, outcome.params()) == 1


def outcome_stands(conn: Handle, outcome: Outcome) -> bool:
    """Whether the row holds `outcome` already (under its fence): a write whose answer was lost
    with its connection went through, and its retry was refused for that reason."""
    row = Db.of(conn).one(Q.job_outcome, {"id": outcome.job_id})
    return row is not None and (row[0], row[1]) == (outcome.status, outcome.fence)


def _finish_and_claim_sql() -> Query:
    """finish_job (its parameters renamed ``done_*``) and claim_job as one PostgreSQL
    statement, composed from the two named queries so the three can never disagree."""
    (finish_sql,) = Q.finish_job.sql["postgresql"]
    (claim_sql,) = Q.claim_job.sql["postgresql"]
    finish_sql = re.sub(r"%\((\w+)\)s", r"%(done_\1)s", finish_sql)
    sql = (
        f"WITH finished AS ({finish_sql} RETURNING 1), claimed AS ({claim_sql}) "
        "SELECT (SELECT count(*) FROM finished), claimed.* "
        "FROM (SELECT 1) AS one LEFT JOIN claimed ON true"
    )
    return Query("finish_and_claim_job", {"postgresql": (sql,)})


#: PostgreSQL only: SQLite has no data-modifying CTE (there the two statements run apart)
FINISH_AND_CLAIM = _finish_and_claim_sql()


def finish_and_claim(
    conn: Handle, outcome: Outcome, job_id: int, worker: str
) -> tuple[bool, Claim | None]:
    """`write_outcome` for the job just run and `claim` for the next, in one statement: one
    commit per job instead of two (PostgreSQL only). Each half is decided as if alone: the
    outcome is refused when fenced out, the claim is None when not claimable."""
    params = {f"done_{k}": v for k, v in outcome.params().items()}
    params.update(id=job_id, worker=worker, now=utcnow())
    row = Db.of(conn).one(FINISH_AND_CLAIM, params)
    assert row is not None  # the LEFT JOIN answers one row
    claimed = Claim.from_row(row[1:]) if row[1] is not None else None
    return row[0] == 1, claimed


def requeue(
    conn: Handle,
    job_id: int,
    fence: int,
    *,
    delay: float = 0.0,
    error: str | None = None,
    refund_attempt: bool = False,
    processed: int | None = None,
    total: int | None = None,
) -> bool:
    """Put a running job back to queued: a retry after `delay` seconds, or (with
    `refund_attempt`) an attempt interrupted by a shutdown that should not count."""
    now = utcnow()
    params = {
        "id": job_id,
        "fence": fence,
        "now": now,
        "run_after": now + timedelta(seconds=delay) if delay > 0 else None,
        "error": _error(error),
        "refund": 1 if refund_attempt else 0,
        "processed": processed,
        "total": total,
    }
    return Db.of(conn).count(Q.requeue_job, params) == 1


def park(conn: Handle, job_id: int, fence: int, reason: str, *, look_again: float) -> bool:
    """Hand a claimed job back unrun because its business is at a flow limit: ``queued`` again,
    outside Redis, the attempt not counted, `reason` shown to operators; the flow waker looks at
    it again within `look_again` seconds (sooner when a slot frees). False when refused."""
    now = utcnow()
    params = {"id": job_id, "fence": fence, "now": now, "parked": reason[:200]}
    params["run_after"] = now + timedelta(seconds=look_again)
    return Db.of(conn).count(Q.park_job, params) == 1


def fenced_write(
    job_id: int,
    fence: int,
    statement: Any,
    state: dict[str, Any],
    *,
    add: dict[str, int],
    processed: int | None,
    total: int | None,
) -> Any:
    """One PostgreSQL statement that runs `statement` (a DELETE or UPDATE) and checkpoints
    `state` on the job row, fenced: both or neither, in one round trip (`fenced_statement`
    with `fenced_params` bound into it; a hot loop builds the statement once instead and
    passes the parameters to each execution)."""
    fused = fenced_statement(
        statement, add, processed=processed is not None, total=total is not None
    )
    return fused.params(fenced_params(job_id, fence, state, add, processed, total))


def fenced_statement(
    statement: Any,
    add: dict[str, int],
    *,
    processed: bool,
    total: bool,
    durable: bool = True,
    expect_state: bool = False,
) -> Any:
    """The fused write + checkpoint of `fenced_write`, with every per-call value a named bound
    parameter (``fenced_*``, given by `fenced_params`): built and compiled once, it is run
    batch after batch with new parameters only (SQLAlchemy's compiled cache then skips the
    statement's construction, cache key and compilation: about 1 ms of Python per batch).

    The job row is locked first (``FOR UPDATE``, only while the attempt's fence holds) and
    `statement` runs only when it was; so on an autocommit connection a stale attempt writes
    nothing at all. Each key of `add` gets ``add[key] * rows`` added to its value in the
    state, ``rows`` being what `statement` touched (the counts are known only in the
    statement). The answer is one row: ``locked`` (0: the job is no longer ours), ``rows``,
    ``cancel``. `processed`/`total`: whether the statement writes the job's progress too.

    `durable` False: the statement's transaction commits without waiting for its WAL to reach
    the disk (``synchronous_commit`` off for that transaction alone, set inside the
    statement). `expect_state`: the job row is locked only while its state is still
    ``fenced_prev`` when that is not NULL (the attempt's last checkpoint, which a database
    crash may have lost when it was not durable); ``locked`` 0 then also means that
    checkpoint is gone."""
    from sqlalchemy import (
        BigInteger,
        DateTime,
        Integer,
        String,
        bindparam,
        cast,
        exists,
        func,
        literal,
        literal_column,
        or_,
        select,
        true,
    )
    from sqlalchemy import update as sql_update
    from sqlalchemy.dialects.postgresql import JSONB

    jobs = BackgroundJob.__table__
    prev = bindparam("fenced_prev", type_=String)
    lock = (
        select(jobs.c.id)
        .where(
            jobs.c.id == bindparam("fenced_job", type_=BigInteger),
            jobs.c.fence == bindparam("fenced_fence", type_=Integer),
            jobs.c.status == "running",
            *(
                [
                    or_(
                        prev.is_(None),
                        func.coalesce(jobs.c.state, cast(literal("{}"), JSONB))
                        == cast(prev, JSONB),
                    )
                ]
                if expect_state
                else []
            ),
        )
        .with_for_update()
        .cte("job_lock")
    )
    written = statement.where(exists(select(lock.c.id))).returning(literal_column("1")).cte("w")
    # the rows written, counted once (the state and the answer both read this one row)
    counted = select(func.count().label("n")).select_from(written).cte("counted")
    rows = select(counted.c.n).scalar_subquery()
    new_state: Any = cast(bindparam("fenced_state", type_=String), JSONB)
    if add:
        pairs: list[Any] = []
        for i, (key, factor) in enumerate(add.items()):
            start = bindparam(f"fenced_base_{i}", type_=BigInteger)
            pairs += [key, start + factor * rows]
        new_state = new_state.op("||")(func.jsonb_build_object(*pairs))
    now = bindparam("fenced_now", type_=DateTime(timezone=True))
    values: dict[str, Any] = {"state": new_state, "heartbeat_at": now, "updated_at": now}
    if processed:
        values["processed"] = bindparam("fenced_processed", type_=BigInteger)
    if total:
        values["total"] = bindparam("fenced_total", type_=BigInteger)
    job = (
        sql_update(jobs)
        .where(jobs.c.id == bindparam("fenced_job", type_=BigInteger), exists(select(lock.c.id)))
        .values(**values)
        .returning(jobs.c.cancel_requested)
        .cte("job")
    )
    answer = [
        select(func.count()).select_from(lock).scalar_subquery().label("locked"),
        rows.label("rows"),
        select(job.c.cancel_requested).scalar_subquery().label("cancel"),
    ]
    if not durable:
        # is_local: for this statement's own transaction; read at its commit, reset after it
        mode = select(func.set_config("synchronous_commit", "off", true()).label("m"))
        answer.append(mode.scalar_subquery().label("commit_mode"))
    return select(*answer)


def fenced_params(
    job_id: int,
    fence: int,
    state: dict[str, Any],
    add: dict[str, int],
    processed: int | None,
    total: int | None,
    prev: str | None = None,
) -> dict[str, Any]:
    """The ``fenced_*`` parameters of a `fenced_statement` for one execution: the state
    without the keys of `add` (those are computed in the statement from their current value
    in `state`), the time, the progress when given, and the state the row must still hold
    (`prev`, its JSON, for ``expect_state``; None: no check)."""
    params: dict[str, Any] = {
        "fenced_job": job_id,
        "fenced_fence": fence,
        "fenced_state": json.dumps({k: v for k, v in state.items() if k not in add}),
        "fenced_now": utcnow(),
    }
    for i, key in enumerate(add):
        params[f"fenced_base_{i}"] = int(state.get(key, 0))
    if processed is not None:
        params["fenced_processed"] = processed
    if total is not None:
        params["fenced_total"] = total
    params["fenced_prev"] = prev
    return params
