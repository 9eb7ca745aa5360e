"""``GET /api/calls`` with each call's recording state, and the recording file itself.

Both are scoped to the bearer token's business: another business's call is answered 404, the
same as a call that does not exist, so call SIDs cannot be probed across businesses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Blueprint, jsonify, send_file, url_for
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import and_, select

from prosaas_core.api import ApiError, authenticated, current_business_id, current_runtime
from prosaas_core.api.openapi import describe
from prosaas_core.api.params import parse_query
from prosaas_core.bounds import MAX_ID
from prosaas_recordings.tables import calls, recording_tasks

bp = Blueprint("recordings_api", __name__, url_prefix="/api/calls")

T = recording_tasks
MAX_LIMIT = 500


class CallListQuery(BaseModel):
    """``GET /api/calls`` parameters."""

    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=50, ge=1, le=MAX_LIMIT)
    before: int | None = Field(
        default=None, ge=1, le=MAX_ID, description="next_before of the previous page"
    )


class RecordingOut(BaseModel):
    state: str = Field(
        description="none, queued, retrying, downloading, downloaded, failed or a Twilio status"
    )
    recording_sid: str | None
    duration: int | None
    bytes: int | None
    attempts: int
    error: str | None
    next_attempt_at: str | None
    url: str | None = Field(description="the recording file, once downloaded")


class CallOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    call_sid: str
    direction: str | None
    status: str | None
    from_: str | None = Field(alias="from")
    to: str | None
    created_at: str | None
    recording: RecordingOut
    transcript: str | None


class CallPage(BaseModel):
    calls: list[CallOut]
    next_before: int | None


_AUDIO = {
    "audio/mpeg": {"schema": {"type": "string", "contentMediaType": "audio/mpeg"}},
}


def _query(business_id: int):
    return (
        select(
            calls,
            T.c.status.label("task_status"),
            T.c.attempts.label("task_attempts"),
            T.c.last_error.label("task_error"),
            T.c.run_after.label("task_run_after"),
        )
        .select_from(calls)
        # the business condition on the task too: a task is only ever its own call's
        .outerjoin(
            T,
            and_(T.c.recording_sid == calls.c.recording_sid, T.c.business_id == business_id),
        )
        .where(calls.c.business_id == business_id)
    )


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def recording_state(row: Any) -> str:
    """none | queued | retrying | downloading | downloaded | failed | a Twilio status."""
    if row.task_status == "running":
        return "downloading"
    if row.task_status == "queued":
        return "retrying" if row.task_attempts else "queued"
    if row.task_status == "done":
        return "downloaded"
    if row.task_status == "failed":
        return "failed"
    return row.recording_status or "none"


def to_json(row: Any) -> dict[str, Any]:
    state = recording_state(row)
    recording = {
        "state": state,
        "recording_sid": row.recording_sid,
        "duration": row.recording_duration,
        "bytes": row.recording_bytes,
        "attempts": row.task_attempts or 0,
        "error": row.task_error if state in ("failed", "retrying") else row.recording_error,
        "next_attempt_at": _iso(row.task_run_after) if state == "retrying" else None,
        "url": (
            url_for("recordings_api.get_recording", call_sid=row.call_sid)
            if state == "downloaded"
            else None
        ),
    }
    return {
        "call_sid": row.call_sid,
        "direction": row.direction,
        "status": row.status,
        "from": row.from_number,
        "to": row.to_number,
        "created_at": _iso(row.created_at),
        "recording": recording,
        "transcript": row.transcript,
    }


@bp.get("")
@authenticated
@describe(query=CallListQuery, responses={200: ("Calls, newest first", CallPage)}, tags=["calls"])
def list_calls():
    """The business's calls, newest first: ``?limit=`` (default 50, at most 500) and
    ``?before=<id>`` to page on (``next_before`` in the answer)."""
    q = parse_query(CallListQuery)
    limit, before = q.limit, q.before
    stmt = _query(current_business_id()).order_by(calls.c.id.desc()).limit(limit)
    if before is not None:
        stmt = stmt.where(calls.c.id < before)
    with current_runtime().session() as s:
        rows = list(s.execute(stmt))
    return jsonify(
        {
            "calls": [to_json(r) for r in rows],
            "next_before": rows[-1].id if len(rows) == limit else None,
        }
    )


def _one(call_sid: str) -> Any:
    from prosaas_recordings.webhook import CALL_SID_RE

    if not CALL_SID_RE.match(call_sid):  # not a SID: no such call, no query
        raise ApiError(404, "Not found", "no such call")
    with current_runtime().session() as s:
        row = s.execute(_query(current_business_id()).where(calls.c.call_sid == call_sid)).first()
    if row is None:
        raise ApiError(404, "Not found", f"call {call_sid} not found")
    return row


@bp.get("/<call_sid>")
@authenticated
@describe(responses={200: ("The call", CallOut)}, tags=["calls"])
def get_call(call_sid: str):
    """One call of the business with its recording state."""
    return jsonify(to_json(_one(call_sid)))


@bp.get("/<call_sid>/recording")
@authenticated
@describe(
    responses={
        200: ("The recording (Range requests answer 206)", _AUDIO),
        206: ("Part of the recording", _AUDIO),
        304: ("Not modified", None),
        416: ("Range not satisfiable", None),
    },
    tags=["calls"],
)
def get_recording(call_sid: str):
    """The recording as ``audio/mpeg``, with Range and conditional requests."""
    row = _one(call_sid)
    path = Path(row.recording_path) if row.recording_path else None
    if path is None or not path.is_file():
        raise ApiError(404, "Not found", f"call {call_sid} has no downloaded recording")
    return send_file(
        path,
        mimetype="audio/mpeg",
        conditional=True,
        download_name=f"{call_sid}.mp3",
        max_age=0,
    )
