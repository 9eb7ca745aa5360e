"""``/api/schedules``: a business's own cron schedules. Each one fires jobs for that business
only; another business's schedule is answered 404 like a missing one."""

from __future__ import annotations

from typing import Any, Literal

from flask import Blueprint, jsonify
from pydantic import BaseModel, ConfigDict, Field

from prosaas_core.api.openapi import describe
from prosaas_core.api.schemas import Error
from prosaas_core.api.support import (
    authenticated,
    current_business_id,
    current_runtime,
    parse_json,
)

bp = Blueprint("prosaas_schedules", __name__)


class ScheduleRequest(BaseModel):
    """A schedule of the caller's business."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_.\-]{0,99}$")
    cron: str = Field(min_length=1, max_length=120, description="5 fields, or 6 (seconds last)")
    job_type: str = Field(max_length=63)
    payload: dict[str, Any] | None = None
    timezone: str = Field(default="UTC", max_length=64)
    catch_up: Literal["skip", "once", "all"] = "skip"
    jitter: float = Field(default=0.0, ge=0, le=3600)


class ScheduleOut(BaseModel):
    id: int
    name: str
    source: str
    business_id: int | None
    cron: str
    timezone: str
    job_type: str
    per_business: bool
    catch_up: str
    paused: bool
    last_occurrence: str | None
    last_jobs: dict[str, int]
    next_occurrence: str | None
    problem: str | None


class ScheduleList(BaseModel):
    items: list[ScheduleOut]


@bp.post("/api/schedules")
@authenticated
@describe(
    body=ScheduleRequest,
    responses={
        201: ("Schedule created", ScheduleOut),
        400: ("Invalid schedule (cron, time zone, job type or payload)", Error),
        409: ("The business has a schedule of that name", Error),
    },
    tags=["schedules"],
)
def create_schedule():
    """Add a cron schedule whose occurrences enqueue a job for the caller's business."""
    from prosaas_core.schedules import add

    body = parse_json(ScheduleRequest)
    row = add(
        current_runtime(), body.name, cron=body.cron, job_type=body.job_type,
        payload=body.payload, business_id=current_business_id(), timezone=body.timezone,
        catch_up=body.catch_up, jitter=body.jitter, source="business",
    )  # fmt: skip
    resp = jsonify(row)
    resp.status_code = 201
    return resp


@bp.get("/api/schedules")
@authenticated
@describe(responses={200: ("The business's schedules", ScheduleList)}, tags=["schedules"])
def list_schedules():
    """The caller's business's schedules, with last and next occurrences."""
    from prosaas_core.schedules import status

    return jsonify({"items": status(current_runtime(), business_id=current_business_id())})


@bp.get("/api/schedules/<id:schedule_id>")
@authenticated
@describe(
    responses={200: ("One schedule", ScheduleOut), 404: ("No such schedule", Error)},
    tags=["schedules"],
)
def get_schedule(schedule_id: int):
    """One of the caller's business's schedules."""
    from prosaas_core.schedules import by_id

    return jsonify(by_id(current_runtime(), schedule_id, business_id=current_business_id()))


@bp.delete("/api/schedules/<id:schedule_id>")
@authenticated
@describe(responses={204: ("Removed", None), 404: ("No such schedule", Error)}, tags=["schedules"])
def delete_schedule(schedule_id: int):
    """Remove one of the caller's business's schedules (its fired jobs stay)."""
    from prosaas_core.schedules import remove

    remove(current_runtime(), schedule_id, business_id=current_business_id())
    return "", 204
