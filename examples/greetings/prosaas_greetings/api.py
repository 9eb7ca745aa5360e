"""HTTP: POST /api/greetings (202 + the job) and GET /api/greetings."""

from flask import Blueprint, jsonify, request
from sqlalchemy import text

from prosaas_core.api import (
    ApiError,
    authenticated,
    current_business_id,
    current_runtime,
    enqueue_job,
    parse_json,
)
from prosaas_greetings.jobs import SendGreetings

bp = Blueprint("greetings", __name__, url_prefix="/api/greetings")


@bp.post("")
@authenticated
def send():
    """Queue greetings for the caller's business."""
    body = parse_json(SendGreetings)  # 415 / 400 with pydantic's field errors
    return enqueue_job("greetings_send", body.model_dump())  # 202 + Location, or 400/409/503


@bp.get("")
@authenticated
def list_greetings():
    """The caller's greetings, newest first."""
    try:
        limit = min(int(request.args.get("limit", 50)), 500)
    except ValueError:
        raise ApiError(400, "Invalid query", "limit must be an integer") from None
    with current_runtime().session() as s:
        rows = s.execute(
            text(
                "SELECT job_id, seq, body FROM greetings WHERE business_id = :b "
                "ORDER BY job_id DESC, seq DESC LIMIT :n"
            ),
            {"b": current_business_id(), "n": limit},
        ).all()
    return jsonify([{"job_id": r.job_id, "seq": r.seq, "body": r.body} for r in rows])
