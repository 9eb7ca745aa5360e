"""``POST /webhooks/twilio/broadcast-status?r=<recipient id>``: Twilio's message status
callback, which moves a recipient to ``delivered`` or ``failed``.

Verified with the Twilio SDK's ``RequestValidator`` and ``TWILIO_AUTH_TOKEN`` against the URL
Twilio called: ``BROADCAST_PUBLIC_BASE_URL`` (or ``TWILIO_WEBHOOK_BASE_URL``) + path and query;
the URL Flask saw only with ``TWILIO_WEBHOOK_TRUST_HOST=1`` (development): with
``TWILIO_AUTH_TOKEN`` set and neither, the API does not start (`prosaas_core.api.webhooks`).
Twilio signs the full URL, so the recipient id in it cannot
be forged; the ``MessageSid`` must also be the one recorded for that recipient (when one is).
"""

from __future__ import annotations

import logging

from flask import Blueprint, jsonify, request

from prosaas_broadcast import store
from prosaas_broadcast.config import BroadcastConfig
from prosaas_core.api import ApiError, current_runtime
from prosaas_core.api.webhooks import require_public_base_url, signed_url

log = logging.getLogger("prosaas.broadcast.callbacks")

bp = Blueprint("broadcast_callbacks", __name__)

DELIVERED = {"delivered", "read"}
FAILED = {"failed", "undelivered"}


# no public base URL with TWILIO_AUTH_TOKEN set: create_app() and `prosaas serve` refuse to start
require_public_base_url(
    bp,
    plugin="broadcast",
    path="/webhooks/twilio/broadcast-status",
    base_url=lambda settings: BroadcastConfig.from_settings(settings).public_base_url,
    setting="BROADCAST_PUBLIC_BASE_URL (or TWILIO_WEBHOOK_BASE_URL)",
)


def _verify(cfg: BroadcastConfig) -> None:
    from twilio.request_validator import RequestValidator

    if not cfg.twilio_auth_token:
        raise ApiError(503, "Webhook not configured", "set TWILIO_AUTH_TOKEN")
    signature = request.headers.get("X-Twilio-Signature", "")
    if not signature or not RequestValidator(cfg.twilio_auth_token).validate(
        signed_url(cfg.public_base_url), request.form, signature
    ):
        log.warning("Twilio signature rejected for %s", request.path)
        raise ApiError(403, "Forbidden", "missing or invalid X-Twilio-Signature")


@bp.post("/webhooks/twilio/broadcast-status")
def status_callback():
    cfg = BroadcastConfig.from_settings(current_runtime().settings)
    _verify(cfg)
    raw = request.args.get("r", "")
    if not raw.isdigit() or len(raw) > 19:
        raise ApiError(400, "Invalid callback", "r (the recipient id) is required")
    sid = (request.form.get("MessageSid") or request.form.get("SmsSid") or "").strip()[:128]
    status = (request.form.get("MessageStatus") or request.form.get("SmsStatus") or "").lower()
    if not sid or not status:
        raise ApiError(400, "Invalid callback", "MessageSid and MessageStatus are required")
    with current_runtime().session() as s:
        rec = store.by_recipient(s, int(raw))
        if rec is None:
            raise ApiError(404, "Not found", f"recipient {raw} not found")
        if rec["provider_message_id"] not in (None, sid):
            raise ApiError(409, "Conflict", "MessageSid does not match the recipient's message")
        changed = 0
        if status in DELIVERED:
            changed = store.record_status(s, rec["id"], "delivered", sid, None)
        elif status in FAILED:
            code = (request.form.get("ErrorCode") or "").strip()[:16]
            changed = store.record_status(
                s,
                rec["id"],
                "failed",
                sid,
                f"twilio {status}" + (f" (error {code})" if code else ""),
            )
    return jsonify({"recipient_id": rec["id"], "status": status, "changed": bool(changed)})
