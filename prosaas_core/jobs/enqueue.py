"""Enqueue: validate, commit the row, then push its id to RQ."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError

from prosaas_core.errors import (
    MigrationRequiredError,
    NotFoundError,
    PayloadError,
    TimingError,
)
from prosaas_core.jobs.store import Q
from prosaas_core.jobs.transport import push, push_failed, skipping
from prosaas_core.store import Row, connect

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from prosaas_core.registry import JobType
    from prosaas_core.runtime import Runtime

log = logging.getLogger("prosaas.jobs")


@dataclass(frozen=True)
class Enqueued:
    """The outcome of `enqueue`: the job's id and status; `created` is False when a
    `unique_per_business` job was already queued or running and that one is returned."""

    id: int
    status: str
    job_type: str
    business_id: int
    created: bool
    pushed: bool


def validate_payload(jt: JobType, payload: Any) -> dict:
    """The payload as a JSON-ready dict, validated against the job type's model."""
    if payload is None:
        payload = {}
    if jt.payload_model is None:
        if not isinstance(payload, dict):
            raise PayloadError(
                jt.name, [{"loc": [], "msg": "payload must be a JSON object", "type": "dict_type"}]
            )
        return payload
    from pydantic import BaseModel, ValidationError

    if isinstance(payload, BaseModel):
        payload = payload.model_dump(mode="json")
    try:
        model = jt.payload_model.model_validate(payload)
    except ValidationError as exc:
        details = [
            {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
            for e in exc.errors(include_url=False, include_context=False, include_input=False)
        ]
        raise PayloadError(jt.name, details) from None
    return model.model_dump(mode="json")


def _is_job_type_violation(exc: IntegrityError) -> bool:
    return "chk_job_type" in str(exc.orig)


def _is_business_violation(exc: IntegrityError) -> bool:
    """The business_id foreign key (the table's only one) refused the row: no such business."""
    return getattr(exc.orig, "pgcode", None) == "23503" or "FOREIGN KEY" in str(exc.orig).upper()


#: the furthest ahead a job may be scheduled, seconds (a year)
MAX_DELAY = 366 * 86400.0


def _insert(engine: Engine, row: dict[str, Any]) -> int:
    """One INSERT ... RETURNING that commits on its own (``insert_job``): the row is durable
    before the push, and a refused row (foreign key, chk_job_type, unique index) leaves nothing
    behind. This is the API's hottest statement: a bare driver connection, no SQLAlchemy."""
    with connect(engine) as db:
        return db.scalar(Q.insert_job, {**row, "payload": json.dumps(row["payload"])})


def due_time(run_at: datetime | None = None, delay: float | None = None) -> datetime | None:
    """When a job asked to run at `run_at` (aware, or naive UTC) or after `delay` seconds is
    due; None for now (a time in the past is now). TimingError for both, or a delay that is
    negative or more than a year."""
    if run_at is not None and delay is not None:
        raise TimingError("give run_at or delay, not both")
    now = datetime.now(UTC)
    if delay is not None:
        if not (0 <= delay <= MAX_DELAY):
            raise TimingError(f"delay must be 0 to {MAX_DELAY:.0f} seconds, got {delay}")
        when = now + timedelta(seconds=delay)
    elif run_at is not None:
        when = run_at if run_at.tzinfo is not None else run_at.replace(tzinfo=UTC)
    else:
        return None
    return when if when > now else None


def enqueue(
    rt: Runtime,
    job_type: str,
    business_id: int,
    payload: Any = None,
    *,
    run_at: datetime | None = None,
    delay: float | None = None,
) -> Enqueued:
    """Validate and persist a job, then push it to its queue; with `run_at` (a datetime) or
    `delay` (seconds), it is stored due later and pushed when due by any worker (a Redis loss
    meanwhile loses nothing: the sweeper pushes due rows Redis does not hold).

    Raises `UnknownJobTypeError`, `PayloadError`, `NotFoundError` (no such business) or
    `MigrationRequiredError` (the database's chk_job_type does not allow the type yet).
    """
    jt, row, due = _prepare(rt, job_type, payload, run_at, delay)
    row["business_id"] = business_id
    try:
        job_id = _insert(rt.engine, row)
    except IntegrityError as exc:
        if not _is_job_type_violation(exc) and _is_business_violation(exc):
            raise NotFoundError(f"business {business_id} not found") from None
        return _refused(rt, exc, jt, business_id, row["unique_key"],
                        lambda: enqueue(rt, job_type, business_id, payload, run_at=run_at,
                                        delay=delay))  # fmt: skip
    return _pushed(rt, jt, job_id, business_id, due)


def enqueue_for_token(
    rt: Runtime,
    token: str,
    job_type: str,
    payload: Any = None,
    *,
    run_at: datetime | None = None,
    delay: float | None = None,
) -> Enqueued | None:
    """`enqueue` for the business of the live API token `token`, the token's lookup and the
    INSERT being one statement (``insert_job_for_token``); None, with nothing written, when the
    token is unknown or revoked. The same errors as `enqueue` otherwise. A job due now of a type
    without flow limits is pushed behind the caller's answer (`pusher`): its `pushed` is
    False, the push not having happened yet."""
    from prosaas_core.tokens import hash_token, lookup_token

    jt, row, due = _prepare(rt, job_type, payload, run_at, delay)
    row["digest"] = hash_token(token)
    try:
        with connect(rt.engine) as db:
            found = db.one(Q.insert_job_for_token, {**row, "payload": json.dumps(row["payload"])})
    except IntegrityError as exc:
        owner = lookup_token(rt.engine, token)  # only on this path: a refused row
        if owner is None:
            return None
        return _refused(rt, exc, jt, owner, row["unique_key"],
                        lambda: enqueue(rt, job_type, owner, payload, run_at=run_at,
                                        delay=delay))  # fmt: skip
    if found is None:
        return None
    job_id, business_id = found
    if due is None and rt.flow.policy(jt, business_id) is None:
        # pushed behind the answer, many per round trip: the request never waits for Redis
        from prosaas_core.jobs.pusher import Pending, push_behind

        if push_behind(rt, Pending(job_id, jt.queue, jt.timeout, jt.name, business_id)):
            return Enqueued(job_id, "queued", jt.name, business_id, True, False)
    return _pushed(rt, jt, job_id, business_id, due)


def _prepare(
    rt: Runtime, job_type: str, payload: Any, run_at: datetime | None, delay: float | None
) -> tuple[JobType, dict[str, Any], datetime | None]:
    """The job type, its row (without the business) and when it is due, validated."""
    jt = rt.registry.job_type(job_type)
    data = validate_payload(jt, payload)
    due = due_time(run_at, delay)
    row = {
        "job_type": jt.name,
        "queue": jt.queue,
        "payload": data,
        "max_attempts": jt.max_attempts,
        "unique_key": jt.name if jt.unique_per_business else None,
        "run_after": due,
    }
    return jt, row, due


def _refused(
    rt: Runtime,
    exc: IntegrityError,
    jt: JobType,
    business_id: int,
    unique_key: str | None,
    again: Callable[[], Enqueued],
) -> Enqueued:
    """The answer for a row the database refused: 503 (chk_job_type), or the active job a
    unique type already has (`again` when that one finished meanwhile)."""
    if _is_job_type_violation(exc):
        log.error(
            "Database migration required: job type %r rejected by chk_job_type; "
            "run `prosaas db upgrade`",
            jt.name,
        )
        raise MigrationRequiredError(jt.name) from None
    if unique_key is None:
        raise exc
    existing = _active_unique(rt, business_id, unique_key)
    if existing is None:  # finished between our insert and this read: try once more
        return again()
    active_id, status = existing
    log.info("Job %s (%s) already active for business %s", active_id, jt.name, business_id)
    return Enqueued(active_id, status, jt.name, business_id, False, False)


def _pushed(
    rt: Runtime, jt: JobType, job_id: int, business_id: int, due: datetime | None
) -> Enqueued:
    """After the commit: schedule a job due later, or admit and push it now."""
    if due is not None:
        from prosaas_core.jobs.delayed import schedule

        scheduled = schedule(rt, job_id, jt.queue, (due - datetime.now(UTC)).total_seconds(),
                             timeout=jt.timeout, request=True)  # fmt: skip
        log.info(
            "Enqueued job_id=%s job_type=%s business_id=%s queue=%r due=%s"
            if scheduled
            else "Accepted job_id=%s job_type=%s business_id=%s queue=%r due=%s: committed, not "
            "scheduled (Redis unavailable); the sweeper pushes it once due",
            job_id,
            jt.name,
            business_id,
            jt.queue,
            due.isoformat(),
        )
        return Enqueued(job_id, "queued", jt.name, business_id, True, False)
    pushed = admit_and_push(rt, jt, job_id, business_id)
    # "Enqueued" means committed and pushed; a row Redis did not take waits for the sweeper
    if pushed is None:
        return Enqueued(job_id, "queued", jt.name, business_id, True, False)
    log_push(job_id, jt.name, business_id, jt.queue, pushed)
    return Enqueued(job_id, "queued", jt.name, business_id, True, pushed)


def log_push(job_id: int, job_type: str, business_id: int, queue: str, pushed: bool) -> None:
    """The line operators grep for a committed job: pushed, or left to the sweeper."""
    log.info(
        "Enqueued job_id=%s job_type=%s business_id=%s queue=%r"
        if pushed
        else "Accepted job_id=%s job_type=%s business_id=%s queue=%r: committed, not pushed "
        "(Redis unavailable); the sweeper pushes it",
        job_id,
        job_type,
        business_id,
        queue,
    )


def admit_and_push(rt: Runtime, jt: JobType, job_id: int, business_id: int) -> bool | None:
    """Push the new row; a flow-limited type is admitted first, and parked (None) when its
    business has no slot or rate token for it now."""
    pol = rt.flow.policy(jt, business_id)
    if pol is None:
        return push(rt, job_id, jt.queue, timeout=jt.timeout)
    from redis.exceptions import RedisError

    from prosaas_core.jobs.flow import flow_key

    if skipping(rt, job_id):  # Redis hung a moment ago: admission would wait as long again
        return False
    admitted_at, started = time.time(), time.monotonic()
    try:
        refusal = rt.flow.admit(job_id, business_id, jt, pol, limits=rt.flow.admission)
    except RedisError as exc:  # the row is committed: the sweeper pushes it, the worker gates it
        push_failed(rt, job_id, exc, started)
        return False
    if refusal is None:
        slot_at = admitted_at if pol.concurrency is not None else None
        return push(rt, job_id, jt.queue, timeout=jt.timeout, slot_at=slot_at)
    try:
        rt.flow.park_new(job_id, flow_key(jt.name, business_id), refusal)
    except RedisError as exc:
        log.warning("flow notice failed for job %s: %s", job_id, type(exc).__name__)
    log.info(
        "Parked job_id=%s job_type=%s business_id=%s: %s",
        job_id,
        jt.name,
        business_id,
        refusal.reason,
    )
    return None


def _active_unique(rt: Runtime, business_id: int, unique_key: str) -> Row | None:
    """The (id, status) of the active job holding `unique_key`, or None."""
    with connect(rt.engine) as db:
        return db.one(Q.active_unique_job, {"business_id": business_id, "unique_key": unique_key})
