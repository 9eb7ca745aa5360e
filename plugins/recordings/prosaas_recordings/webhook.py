"""``POST /webhooks/twilio/recording``: Twilio's recording status callback.

Verified with the Twilio SDK's ``RequestValidator`` and ``TWILIO_AUTH_TOKEN`` against the URL
Twilio called: ``TWILIO_WEBHOOK_BASE_URL`` + path and query. With ``TWILIO_AUTH_TOKEN`` set and
no base URL the API does not start (`prosaas_core.api.webhooks`): the URL Flask sees is built
from the request's ``Host`` header, which the caller chooses. ``TWILIO_WEBHOOK_TRUST_HOST=1``
allows it for development. A completed recording becomes a durable ``recording_tasks`` row, once per
``RecordingSid``; a repeated callback writes nothing. The answer is immediate, the download is
the recording worker's.

Which business a recording belongs to:

1. the business of the call with this ``CallSid`` in ``calls``, when prosaas has seen the call;
2. otherwise the ``business_id`` query parameter of the callback URL, when that business
   exists. Set ``RecordingStatusCallback`` to ``.../webhooks/twilio/recording?business_id=42``
   when creating the call: Twilio signs the full URL, so the parameter cannot be forged without
   the auth token. The call row is then created for that business;
3. otherwise the callback is refused with 404 and nothing is stored.
"""

from __future__ import annotations

import logging
import re

from flask import Blueprint, jsonify, request
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from prosaas_core.api import ApiError, current_runtime
from prosaas_core.api.openapi import describe
from prosaas_core.api.webhooks import require_public_base_url, signed_url
from prosaas_recordings import store
from prosaas_recordings.config import RecordingsConfig
from prosaas_recordings.download import Limits, host_allowed
from prosaas_recordings.tables import businesses, calls

log = logging.getLogger("prosaas.recordings.webhook")

bp = Blueprint("recordings_webhook", __name__)

#: Twilio's SID shapes: two letters naming the kind, then 32 hex digits
CALL_SID_RE = re.compile(r"^CA[0-9a-fA-F]{32}$")
RECORDING_SID_RE = re.compile(r"^RE[0-9a-fA-F]{32}$")
#: every value Twilio sends as RecordingStatus
STATUSES = frozenset({"in-progress", "completed", "absent", "failed"})


def config() -> RecordingsConfig:
    return RecordingsConfig.from_settings(current_runtime().settings)


# no public base URL with TWILIO_AUTH_TOKEN set: create_app() and `prosaas serve` refuse to start
require_public_base_url(
    bp,
    plugin="recordings",
    path="/webhooks/twilio/recording",
    base_url=lambda settings: settings.get("TWILIO_WEBHOOK_BASE_URL"),
)


def verify_signature(cfg: RecordingsConfig) -> None:
    """403 unless X-Twilio-Signature matches the request (and 503 if no token is set)."""
    from twilio.request_validator import RequestValidator, get_signature_algorithm

    if not cfg.auth_token:
        raise ApiError(503, "Webhook not configured", "set TWILIO_AUTH_TOKEN")
    signature = request.headers.get("X-Twilio-Signature", "")
    algorithm = get_signature_algorithm(request.headers.get("X-Twilio-Webhooks-Signature-Settings"))
    if not signature or not RequestValidator(cfg.auth_token).validate(
        signed_url(cfg.webhook_base_url), request.form, signature, algorithm
    ):
        log.warning("Twilio signature rejected for %s", request.path)
        raise ApiError(403, "Forbidden", "missing or invalid X-Twilio-Signature")


def _field(name: str, *, required: bool = True) -> str | None:
    value = (request.form.get(name) or "").strip()
    if required and not value:
        raise ApiError(400, "Invalid callback", f"{name} is required")
    return value or None


def _required(name: str) -> str:
    """A form field that must be present (400 naming it otherwise)."""
    value = _field(name)
    assert value is not None  # _field raised otherwise
    return value


def _duration() -> int | None:
    raw = request.form.get("RecordingDuration")
    try:
        return int(raw) if raw not in (None, "") else None
    except ValueError:
        raise ApiError(400, "Invalid callback", "RecordingDuration must be an integer") from None


def _business_for(session: Session, call_sid: str) -> tuple[int, bool]:
    """The business owning `call_sid` (see the module docstring), and whether the call is new.
    Reads only: the call row is created by `_create_call`, after the duplicate check."""
    found = session.execute(
        select(calls.c.business_id).where(calls.c.call_sid == call_sid)
    ).scalar_one_or_none()
    if found is not None:
        return found, False
    raw = request.args.get("business_id", "")
    business_id = int(raw) if raw.isdigit() else None
    if (
        business_id is None
        or session.execute(
            select(businesses.c.id).where(businesses.c.id == business_id)
        ).scalar_one_or_none()
        is None
    ):
        raise ApiError(404, "Unknown call", f"no call {call_sid} and no known business_id in URL")
    return business_id, True


def _create_call(session: Session, business_id: int, call_sid: str) -> int:
    """Create the call for `business_id`; the business that owns it once it exists."""
    store.create_call(session, business_id=business_id, call_sid=call_sid)
    # A concurrent callback may have created it first: read back whose it is.
    return session.execute(
        select(calls.c.business_id).where(calls.c.call_sid == call_sid)
    ).scalar_one()


def _known_recording(session: Session, recording_sid: str) -> bool:
    from prosaas_recordings.tables import recording_tasks

    found = session.execute(
        select(recording_tasks.c.id).where(recording_tasks.c.recording_sid == recording_sid)
    ).first()
    return found is not None


_FORM = {
    "application/x-www-form-urlencoded": {
        "schema": {
            "type": "object",
            "properties": {
                "CallSid": {"type": "string", "pattern": CALL_SID_RE.pattern},
                "RecordingSid": {"type": "string", "pattern": RECORDING_SID_RE.pattern},
                "RecordingStatus": {"type": "string", "enum": sorted(STATUSES)},
                "RecordingUrl": {"type": "string", "format": "uri"},
                "RecordingDuration": {"type": "string", "pattern": "^[0-9]{1,9}$"},
                "AccountSid": {"type": "string"},
            },
            "required": ["CallSid", "RecordingSid", "RecordingStatus"],
        }
    }
}
_ANSWER = {
    "application/json": {
        "schema": {
            "type": "object",
            "properties": {
                "status": {"enum": ["queued", "duplicate", "ignored"]},
                "task_id": {"type": "integer"},
                "recording_status": {"type": "string"},
            },
            "required": ["status"],
        }
    }
}


@bp.post("/webhooks/twilio/recording")
@describe(
    body=_FORM,
    responses={
        200: ("Queued, a duplicate, or a non-completed status noted", _ANSWER),
        403: ("Missing or invalid X-Twilio-Signature", None),
        404: ("Unknown call and no known business_id in the signed URL", None),
        503: ("TWILIO_AUTH_TOKEN or TWILIO_WEBHOOK_BASE_URL not configured", None),
    },
    tags=["webhooks"],
)
def recording_callback():
    """Accept a recording status callback; queue the download of a completed recording."""
    cfg = config()
    verify_signature(cfg)
    call_sid = _required("CallSid")
    recording_sid = _required("RecordingSid")
    status = _required("RecordingStatus").lower()
    if not CALL_SID_RE.match(call_sid) or not RECORDING_SID_RE.match(recording_sid):
        raise ApiError(
            400, "Invalid callback", "CallSid must be CA + 32 hex digits, RecordingSid RE + 32"
        )
    if status not in STATUSES:
        raise ApiError(
            400, "Invalid callback", f"RecordingStatus must be one of {', '.join(sorted(STATUSES))}"
        )
    url = _field("RecordingUrl", required=status == "completed")
    if url is not None and not host_allowed(url, Limits(cfg.allowed_hosts, cfg.allow_http)):
        log.warning("RECORDING_URL_REJECTED call_sid=%s url=%s", call_sid, url)
        raise ApiError(400, "Recording URL not allowed", "host not in RECORDINGS_ALLOWED_HOSTS")
    duration = _duration()

    with current_runtime().session() as s:
        business_id, new_call = _business_for(s, call_sid)
        if status == "completed" and _known_recording(s, recording_sid):
            # a repeated callback (Twilio retries): answered before anything is written
            log.info("RECORDING_DUPLICATE call_sid=%s recording_sid=%s", call_sid, recording_sid)
            return jsonify({"status": "duplicate"})
        if new_call:
            business_id = _create_call(s, business_id, call_sid)
        if status != "completed":
            # in-progress, absent, failed: noted on the call, nothing to download
            s.execute(
                update(calls)
                .where(calls.c.call_sid == call_sid, calls.c.recording_path.is_(None))
                .values(
                    recording_sid=recording_sid, recording_status=status, updated_at=store.now()
                )
            )
            return jsonify({"status": "ignored", "recording_status": status})
        assert url is not None  # required for a completed recording, checked above
        task_id = store.create_task(
            s,
            business_id=business_id,
            call_sid=call_sid,
            recording_sid=recording_sid,
            recording_url=url,
            duration=duration,
        )
        if task_id is None:
            log.info("RECORDING_DUPLICATE call_sid=%s recording_sid=%s", call_sid, recording_sid)
            return jsonify({"status": "duplicate"})
        s.execute(
            update(calls)
            .where(calls.c.call_sid == call_sid)
            .values(
                recording_sid=recording_sid,
                recording_url=url,
                recording_status="queued",
                recording_duration=duration,
                recording_error=None,
                updated_at=store.now(),
            )
        )
    log.info(
        "RECORDING_QUEUED call_sid=%s business_id=%s recording_sid=%s task_id=%s",
        call_sid,
        business_id,
        recording_sid,
        task_id,
    )
    return jsonify({"status": "queued", "task_id": task_id})
