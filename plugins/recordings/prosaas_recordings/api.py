"""``GET /api/calls`` with each call's recording state, and the recording file itself.

Both are scoped to the bearer token's business: another business's call is answered 404, the
same as a call that does not exist, so call SIDs cannot be probed across businesses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Blueprint, jsonify, request, send_file, url_for
from sqlalchemy import and_, select

from prosaas_core.api import ApiError, authenticated, current_business_id, current_runtime
from prosaas_recordings.tables import calls, recording_tasks

bp = Blueprint("recordings_api", __name__, url_prefix="/api/calls")

T = recording_tasks
MAX_LIMIT = 500


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
        .outerjoin(T, and_(T.c.recording_sid == calls.c.recording_sid))
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
def list_calls():
    """The business's calls, newest first: ``?limit=`` (default 50, at most 500) and
    ``?before=<id>`` to page on (``next_before`` in the answer)."""
    try:
        limit = int(request.args.get("limit", 50))
        before = int(request.args["before"]) if "before" in request.args else None
    except ValueError:
        raise ApiError(400, "Invalid query", "limit and before must be integers") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(400, "Invalid query", f"limit must be between 1 and {MAX_LIMIT}")
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
    with current_runtime().session() as s:
        row = s.execute(_query(current_business_id()).where(calls.c.call_sid == call_sid)).first()
    if row is None:
        raise ApiError(404, "Not found", f"call {call_sid} not found")
    return row


@bp.get("/<call_sid>")
@authenticated
def get_call(call_sid: str):
    """One call of the business with its recording state."""
    return jsonify(to_json(_one(call_sid)))


@bp.get("/<call_sid>/recording")
@authenticated
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
