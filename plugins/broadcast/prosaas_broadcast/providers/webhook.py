"""``webhook``: POST each message as JSON to ``BROADCAST_WEBHOOK_URL``.

Headers: ``X-Prosaas-Signature: sha256=<hex HMAC-SHA256 of the body with
BROADCAST_WEBHOOK_SECRET>``, ``Idempotency-Key: <broadcast id>:<lead id>`` (the same on every
attempt at a recipient, so the receiver can drop repeats).
"""

from __future__ import annotations

import hashlib
import hmac
import json

from prosaas_broadcast.providers import Message, PermanentError, Provider
from prosaas_broadcast.providers.http import pool, raise_for, request

SIGNATURE_HEADER = "X-Prosaas-Signature"


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookProvider(Provider):
    name = "webhook"
    guarantee = (
        "exactly once if the receiver deduplicates by Idempotency-Key: a recipient whose "
        "outcome was not recorded is re-sent only with the same key"
    )

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.http = pool(cfg.http_timeout)

    def check(self) -> None:
        if not self.cfg.webhook_url or not self.cfg.webhook_secret:
            raise PermanentError("set BROADCAST_WEBHOOK_URL and BROADCAST_WEBHOOK_SECRET")

    def send(self, msg: Message) -> str:
        self.check()
        body = json.dumps(
            {
                "broadcast_id": msg.broadcast_id,
                "lead_id": msg.lead_id,
                "channel": msg.channel,
                "to": msg.to,
                "body": msg.body,
            },
            separators=(",", ":"),
        ).encode()
        resp = request(
            self.http,
            "POST",
            self.cfg.webhook_url,
            body=body,
            headers={
                "Content-Type": "application/json",
                "Idempotency-Key": msg.idempotency_key,
                SIGNATURE_HEADER: sign(self.cfg.webhook_secret, body),
            },
        )
        raise_for(resp, "webhook")
        try:  # the receiver's own id when it answers one; the key otherwise
            data = json.loads(resp.data or b"{}")
        except ValueError:
            data = None
        found = data.get("id") if isinstance(data, dict) else None
        return str(found or msg.idempotency_key)[:128]
