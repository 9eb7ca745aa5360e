"""Twilio through its SDK: place a call, fetch one, list calls to a number. The REST base URL is
a setting (``OUTBOUND_CALLS_TWILIO_API_URL``) so tests and the benchmark use a local server."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from prosaas_outbound_calls.config import OutboundConfig

STATUS_PATH = "/webhooks/twilio/outbound-call-status"
RECORDING_PATH = "/webhooks/twilio/recording"  # the recordings plugin's webhook


class ProviderNotConfigured(RuntimeError):
    """TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN or TWILIO_WEBHOOK_BASE_URL is missing."""


def missing_settings(cfg: OutboundConfig) -> list[str]:
    names = {
        "TWILIO_ACCOUNT_SID": cfg.account_sid,
        "TWILIO_AUTH_TOKEN": cfg.auth_token,
        "TWILIO_WEBHOOK_BASE_URL": cfg.webhook_base_url,
    }
    return [k for k, v in names.items() if not v]


@dataclass(frozen=True)
class CallInfo:
    sid: str
    status: str | None
    to: str | None
    from_: str | None
    date_created: datetime | None


def _info(c: Any) -> CallInfo:
    return CallInfo(c.sid, c.status, c.to, getattr(c, "_from", None), c.date_created)


class Provider:
    """One SDK client per thread (its HTTP session is not shared between threads)."""

    def __init__(self, cfg: OutboundConfig) -> None:
        missing = missing_settings(cfg)
        if missing:
            raise ProviderNotConfigured(f"set {', '.join(missing)} to place outbound calls")
        self.cfg = cfg
        self._local = threading.local()

    def client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            from twilio.http.http_client import TwilioHttpClient
            from twilio.rest import Client

            http = TwilioHttpClient(timeout=self.cfg.http_timeout, max_retries=0)
            client = Client(self.cfg.account_sid, self.cfg.auth_token, http_client=http)
            client.api.base_url = self.cfg.api_base_url.rstrip("/")
            self._local.client = client
        return client

    def callback_urls(self, business_id: int, target_id: int, token: str) -> tuple[str, str]:
        """(status callback, recording callback): Twilio signs the whole URL, so the ids in
        the query cannot be forged without the auth token."""
        base = (self.cfg.webhook_base_url or "").rstrip("/")
        status = base + STATUS_PATH + "?" + urlencode({"target": target_id, "attempt": token})
        recording = base + RECORDING_PATH + "?" + urlencode({"business_id": business_id})
        return status, recording

    def create(
        self,
        *,
        to: str,
        from_: str,
        url: str,
        business_id: int,
        target_id: int,
        token: str,
        record: bool,
        machine_detection: str | None,
    ) -> CallInfo:
        status_cb, recording_cb = self.callback_urls(business_id, target_id, token)
        kwargs: dict[str, Any] = {
            "to": to,
            "from_": from_,
            "url": url,
            "status_callback": status_cb,
            "status_callback_method": "POST",
            "status_callback_event": list(self.cfg.status_events),
            "timeout": self.cfg.ring_timeout,
        }
        if self.cfg.time_limit:
            kwargs["time_limit"] = self.cfg.time_limit
        if record:
            kwargs.update(
                record=True,
                recording_status_callback=recording_cb,
                recording_status_callback_method="POST",
                recording_status_callback_event=["completed"],
            )
        if machine_detection:
            kwargs["machine_detection"] = machine_detection
        return _info(self.client().calls.create(**kwargs))

    def fetch(self, call_sid: str) -> CallInfo | None:
        """The call as the provider knows it; None when it does not exist."""
        from twilio.base.exceptions import TwilioRestException

        try:
            return _info(self.client().calls(call_sid).fetch())
        except TwilioRestException as exc:
            if exc.status == 404:
                return None
            raise

    def calls_to(self, to: str, from_: str, since: datetime) -> list[CallInfo]:
        """Calls to `to` from `from_` created at or after `since` (a minute's slack for clock
        differences): how a claim whose sid was never written is reconciled."""
        slack = since - timedelta(seconds=60)
        found = self.client().calls.list(to=to, from_=from_, start_time_after=slack, limit=50)
        return [_info(c) for c in found if c.date_created is None or c.date_created >= slack]
