"""``POST /webhooks/twilio/outbound-call-status``: Twilio's status callbacks for placed calls.

The URL carries ``target`` and ``attempt`` (the claim's token); Twilio signs the whole URL, so
they cannot be forged without the auth token. The signature is checked with the SDK's
``RequestValidator`` against ``TWILIO_WEBHOOK_BASE_URL`` + path + query (the URL prosaas gave
Twilio): 403 otherwise, nothing changed. The URL Flask saw is used only with
``TWILIO_WEBHOOK_TRUST_HOST=1`` (development); with ``TWILIO_AUTH_TOKEN`` set and no base URL
the API does not start (`prosaas_core.api.webhooks`).

A status is applied only when it ranks above the one recorded (`attempts.apply_status`), so a
replayed or late callback changes nothing; a final status frees the attempt's live-call slot
(which wakes the dialers) and may finish the campaign.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from flask import Blueprint, jsonify, request
from redis.exceptions import RedisError

from prosaas_core.api import ApiError, current_runtime
from prosaas_core.api.webhooks import require_public_base_url, signed_url
from prosaas_core.limits import Slot
from prosaas_outbound_calls import attempts, campaigns
from prosaas_outbound_calls.config import OutboundConfig
from prosaas_outbound_calls.provider import STATUS_PATH

log = logging.getLogger("prosaas.outbound_calls.callbacks")

bp = Blueprint("outbound_calls_callbacks", __name__)

SID_RE = re.compile(r"^CA[0-9a-fA-F]{32}$")
TOKEN_RE = re.compile(r"^[0-9a-f]{8,32}$")


# no public base URL with TWILIO_AUTH_TOKEN set: create_app() and `prosaas serve` refuse to start
require_public_base_url(
    bp,
    plugin="outbound_calls",
    path=STATUS_PATH,
    base_url=lambda settings: settings.get("TWILIO_WEBHOOK_BASE_URL"),
)


def verify_signature(cfg: OutboundConfig) -> None:
    """403 unless X-Twilio-Signature matches (503 when no auth token is configured)."""
    from twilio.request_validator import RequestValidator

    if not cfg.auth_token:
        raise ApiError(503, "Webhook not configured", "set TWILIO_AUTH_TOKEN")
    signature = request.headers.get("X-Twilio-Signature", "")
    if not signature or not RequestValidator(cfg.auth_token).validate(
        signed_url(cfg.webhook_base_url), request.form, signature
    ):
        log.warning("OUTBOUND_CALLBACK_FORGED path=%s", request.path)
        raise ApiError(403, "Forbidden", "missing or invalid X-Twilio-Signature")


def _int(name: str, raw: str | None) -> int | None:
    if raw in (None, ""):
        return None
    if not raw.isdigit() or len(raw) > 9:
        raise ApiError(400, "Invalid callback", f"{name} must be a non-negative integer")
    return int(raw)


@bp.post(STATUS_PATH)
def status_callback():
    """Apply one call status to its target and call row."""
    cfg = OutboundConfig.from_settings(current_runtime().settings)
    verify_signature(cfg)
    target_id = _int("target", request.args.get("target"))
    token = request.args.get("attempt", "")
    call_sid = (request.form.get("CallSid") or "").strip()
    status = (request.form.get("CallStatus") or "").strip().lower()
    if target_id is None or not TOKEN_RE.match(token):
        raise ApiError(400, "Invalid callback", "target and attempt are required in the URL")
    if not SID_RE.match(call_sid):
        raise ApiError(400, "Invalid callback", "CallSid must be a Twilio call SID")
    if status not in attempts.KNOWN:
        raise ApiError(400, "Invalid callback", f"unknown CallStatus {status!r}")
    duration = _int("CallDuration", request.form.get("CallDuration"))
    answered_by = (request.form.get("AnsweredBy") or "").strip() or None

    rt = current_runtime()
    # most callbacks are progress moving a call forward: one round trip, no row held across
    # round trips (the same rules as apply_status, checked by the UPDATE itself)
    applied = attempts.apply_progress(
        rt.engine, target_id, token, call_sid, status, answered_by=answered_by
    )
    if applied is None:
        with rt.session() as s:
            applied = attempts.apply_status(
                s, target_id, token, call_sid, status, answered_by=answered_by, duration=duration
            )
            if applied.outcome == "applied" and status in attempts.FINAL and applied.campaign_id:
                # in the same transaction: two last callbacks racing each other may both see
                # the other's call open; the dialers' sweep finishes such a campaign soon after
                campaigns.finish(s, [applied.campaign_id])
    try:
        _slots(rt, applied, cfg, target_id, call_sid, status)
    except RedisError as exc:
        # the status is committed, so answer rather than wait: a slot left held is released by
        # the dialers' sweep (no live target holds it) within about a minute; a call that could
        # not be put back into its slot counts again when the sweep settles it
        log.warning(
            "OUTBOUND_SLOT_UPDATE_FAILED target=%s call_sid=%s status=%s: %s",
            target_id,
            call_sid,
            status,
            type(exc).__name__,
        )
    log.info(
        "OUTBOUND_CALL_STATUS target=%s call_sid=%s status=%s outcome=%s",
        target_id,
        call_sid,
        status,
        applied.outcome,
    )
    return jsonify({"status": applied.outcome})


def _slots(
    rt: Any,
    applied: attempts.Applied,
    cfg: OutboundConfig,
    target_id: int,
    call_sid: str,
    status: str,
) -> None:
    """Re-add or release the call's slot as `applied` says, on the request client: a hung Redis
    holds a callback (an API thread) `PROSAAS_PUSH_TIMEOUT`, not 10 s."""
    slots = rt.request_limits.slots
    if applied.readd:
        slots.renew(Slot(*applied.readd, 0), cfg.slot_timeout, readd=True)
    if applied.release:
        _, after = slots.release(Slot(applied.release[0], applied.release[1], 0))
        log.info(
            "OUTBOUND_SLOT_RELEASED target=%s call_sid=%s status=%s active_after=%s",
            target_id,
            call_sid,
            status,
            after,
        )
