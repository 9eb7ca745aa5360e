"""``twilio``: the Messages API through the ``twilio`` SDK.

``BROADCAST_TWILIO_API_BASE`` replaces ``https://api.twilio.com`` (tests and the benchmark
point it at a local server). WhatsApp numbers get the ``whatsapp:`` prefix on both ends. Each
message carries a status callback URL naming its recipient, so Twilio's delivery reports move
the recipient to ``delivered`` or ``failed``.

Twilio has no idempotency key, so a recipient whose attempt ended unrecorded (worker killed,
timeout) is first looked up in Twilio's message list: a message to the same number, from the
same sender, with the same body, created since the attempt began, is taken as the one sent.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from prosaas_broadcast.providers import (
    Message,
    PermanentError,
    Provider,
    RateLimited,
    TransientError,
    UncertainError,
)
from prosaas_broadcast.providers.http import retry_after

#: the clock skew allowed between this machine and Twilio when matching a message's creation
SKEW = timedelta(seconds=60)


def _http_client(timeout: float):
    """The SDK's HTTP client, remembering each thread's last response headers (the SDK's
    exception does not carry Retry-After)."""
    from twilio.http.http_client import TwilioHttpClient

    class Client(TwilioHttpClient):
        local = threading.local()

        def request(self, *args, **kwargs):
            self.local.headers = None
            resp = super().request(*args, **kwargs)
            self.local.headers = resp.headers
            return resp

    return Client(timeout=timeout, pool_connections=True)


class TwilioProvider(Provider):
    name = "twilio"
    guarantee = (
        "at most once in practice: an unrecorded attempt is looked up in Twilio's message list "
        "(same To, From and body, created since the attempt) before any re-send; a message "
        "Twilio accepted but does not list yet could still be sent twice"
    )

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self._client = None
        self._lock = threading.Lock()

    def check(self) -> None:
        missing = [
            k
            for k, v in (
                ("TWILIO_ACCOUNT_SID", self.cfg.twilio_account_sid),
                ("TWILIO_AUTH_TOKEN", self.cfg.twilio_auth_token),
            )
            if not v
        ]
        if missing:
            raise PermanentError(f"twilio provider: set {', '.join(missing)}")

    @property
    def client(self):
        with self._lock:
            if self._client is None:
                from twilio.rest import Client

                self.check()
                self._http = _http_client(self.cfg.http_timeout)
                client = Client(
                    self.cfg.twilio_account_sid,
                    self.cfg.twilio_auth_token,
                    http_client=self._http,
                )
                client.api.base_url = self.cfg.twilio_api_base.rstrip("/")
                self._client = client
            return self._client

    def _sender(self, channel: str) -> str:
        if channel == "whatsapp":
            if not self.cfg.twilio_whatsapp_from:
                raise PermanentError("twilio provider: set BROADCAST_TWILIO_WHATSAPP_FROM")
            return f"whatsapp:{self.cfg.twilio_whatsapp_from}"
        if not self.cfg.twilio_from:
            raise PermanentError("twilio provider: set BROADCAST_TWILIO_FROM")
        return self.cfg.twilio_from

    @staticmethod
    def _to(msg: Message) -> str:
        return f"whatsapp:{msg.to}" if msg.channel == "whatsapp" else msg.to

    def status_callback(self, msg: Message) -> str | None:
        base = self.cfg.public_base_url
        if not base:
            return None
        return f"{base.rstrip('/')}/webhooks/twilio/broadcast-status?r={msg.recipient_id}"

    def _call(self, fn, *args, **kwargs):
        import requests
        from twilio.base.exceptions import TwilioRestException

        client = self.client
        try:
            return fn(*args, **kwargs)
        except TwilioRestException as exc:
            text = f"twilio: {exc.status} {exc.code or ''} {exc.msg}".strip()
            if exc.status == 429:
                headers = getattr(self._http.local, "headers", None) or {}
                raise RateLimited(text, retry_after(headers.get("Retry-After"))) from None
            if exc.status >= 500:
                raise TransientError(text, code=str(exc.code or exc.status)) from None
            raise PermanentError(text, code=str(exc.code or exc.status)) from None
        except requests.exceptions.ConnectTimeout as exc:
            raise TransientError(f"twilio: connect timeout: {exc}") from None
        except requests.exceptions.RequestException as exc:
            raise UncertainError(f"twilio: no answer: {type(exc).__name__}") from None
        finally:
            del client

    def send(self, msg: Message) -> str:
        kwargs = {"to": self._to(msg), "body": msg.body}
        sender = self._sender(msg.channel)
        if sender.startswith("MG"):
            kwargs["messaging_service_sid"] = sender
        else:
            kwargs["from_"] = sender
        callback = self.status_callback(msg)
        if callback:
            kwargs["status_callback"] = callback
        message = self._call(self.client.messages.create, **kwargs)
        return message.sid

    def reconcile(self, msg: Message, since: datetime) -> str | None:
        sender = self._sender(msg.channel)
        found = self._call(
            self.client.messages.list,
            to=self._to(msg),
            date_sent_after=(since - SKEW).date(),
            limit=200,
        )
        for m in found:
            created = m.date_created
            if m.body != msg.body or (created is not None and created < since - SKEW):
                continue
            if not sender.startswith("MG") and m.from_ not in (None, sender):
                continue
            return m.sid
        return None
