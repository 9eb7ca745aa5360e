"""``POST /webhooks/twilio/recording``: Twilio's recording status callback.

Verified with the Twilio SDK's ``RequestValidator`` and ``TWILIO_AUTH_TOKEN`` against the URL
Twilio called (``TWILIO_WEBHOOK_BASE_URL`` + path and query when behind a proxy). A completed
recording becomes a durable ``recording_tasks`` row, once per ``RecordingSid``; the answer is
immediate, the download is the recording worker's.

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
from typing import Any

from flask import Blueprint, jsonify, request
from sqlalchemy import select, update

from prosaas_core.api import ApiError, current_runtime
from prosaas_recordings import store
from prosaas_recordings.config import RecordingsConfig
from prosaas_recordings.download import Limits, host_allowed
from prosaas_recordings.tables import businesses, calls

log = logging.getLogger("prosaas.recordings.webhook")

bp = Blueprint("recordings_webhook", __name__)

SID_RE = re.compile(r"^[A-Za-z]{2}[A-Za-z0-9]{1,62}$")


def config() -> RecordingsConfig:
    return RecordingsConfig.from_settings(current_runtime().settings)


def signed_url(cfg: RecordingsConfig) -> str:
    """The URL Twilio signed: the public base URL when configured, else the one Flask saw."""
    if not cfg.webhook_base_url:
        return request.url
    query = request.query_string.decode("latin-1")
    return cfg.webhook_base_url.rstrip("/") + request.path + (f"?{query}" if query else "")


def verify_signature(cfg: RecordingsConfig) -> None:
    """403 unless X-Twilio-Signature matches the request (and 503 if no token is set)."""
    from twilio.request_validator import RequestValidator, get_signature_algorithm

    if not cfg.auth_token:
        raise ApiError(503, "Webhook not configured", "set TWILIO_AUTH_TOKEN")
    signature = request.headers.get("X-Twilio-Signature", "")
    algorithm = get_signature_algorithm(request.headers.get("X-Twilio-Webhooks-Signature-Settings"))
    if not signature or not RequestValidator(cfg.auth_token).validate(
        signed_url(cfg), request.form, signature, algorithm
    ):
        log.warning("Twilio signature rejected for %s", request.path)
        raise ApiError(403, "Forbidden", "missing or invalid X-Twilio-Signature")


def _field(name: str, *, required: bool = True) -> str | None:
    value = (request.form.get(name) or "").strip()
    if required and not value:
        raise ApiError(400, "Invalid callback", f"{name} is required")
    return value or None


def _duration() -> int | None:
    raw = request.form.get("RecordingDuration")
    try:
        return int(raw) if raw not in (None, "") else None
    except ValueError:
        raise ApiError(400, "Invalid callback", "RecordingDuration must be an integer") from None


def _business_for(session: Any, call_sid: str) -> int:
    """The business owning `call_sid` (see the module docstring); creates the call if new."""
    found = session.execute(
        select(calls.c.business_id).where(calls.c.call_sid == call_sid)
    ).scalar_one_or_none()
    if found is not None:
        return found
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
    insert = store.dialect_insert(session)
    session.execute(
        insert(calls)
        .values(
            business_id=business_id,
            call_sid=call_sid,
            created_at=store.now(),
            updated_at=store.now(),
        )
        .on_conflict_do_nothing(index_elements=["call_sid"])
    )
    # A concurrent callback may have created it first: read back whose it is.
    return session.execute(
        select(calls.c.business_id).where(calls.c.call_sid == call_sid)
    ).scalar_one()


@bp.post("/webhooks/twilio/recording")
def recording_callback():
    """Accept a recording status callback; queue the download of a completed recording."""
    cfg = config()
    verify_signature(cfg)
    call_sid = _field("CallSid")
    recording_sid = _field("RecordingSid")
    status = (_field("RecordingStatus", required=False) or "completed").lower()
    if not SID_RE.match(call_sid) or not SID_RE.match(recording_sid):
        raise ApiError(400, "Invalid callback", "CallSid and RecordingSid must be Twilio SIDs")
    url = _field("RecordingUrl", required=status == "completed")
    if url is not None and not host_allowed(url, Limits(cfg.allowed_hosts, cfg.allow_http)):
        log.warning("RECORDING_URL_REJECTED call_sid=%s url=%s", call_sid, url)
        raise ApiError(400, "Recording URL not allowed", "host not in RECORDINGS_ALLOWED_HOSTS")
    duration = _duration()

    with current_runtime().session() as s:
        business_id = _business_for(s, call_sid)
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
