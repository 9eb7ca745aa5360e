"""A local stand-in for the providers' HTTP side, for tests and the benchmark: one server that
answers both as a webhook receiver (``POST /hook``) and as Twilio's Messages API
(``/2010-04-01/Accounts/<sid>/Messages.json``: 201 with a ``sid``, 429 with ``Retry-After``,
400 with a Twilio error code, and the message list).

The webhook side behaves like a receiver that deduplicates by ``Idempotency-Key``: a repeated
key is answered 200 again but not accepted twice. Everything is recorded with its arrival time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

WEBHOOK_SECRET = "test-webhook-secret"
ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "test-auth-token"
FROM = "+14155550100"


class FakeProvider:
    """Start with ``with FakeProvider() as p:``; ``p.url`` is its base URL."""

    def __init__(self, *, latency: float = 0.0, secret: str = WEBHOOK_SECRET) -> None:
        self.latency = latency
        self.secret = secret
        self.lock = threading.Lock()
        #: (arrival time, idempotency key or sid, to, body) of each accepted message
        self.accepted: list[tuple[float, str, str, str]] = []
        #: arrival time and answer of every send request, accepted or not
        self.requests: list[tuple[float, int]] = []
        self.keys: Counter[str] = Counter()
        self.repeats: Counter[str] = Counter()
        self.bad_signatures = 0
        #: per phone: statuses to answer first, in order (e.g. [503, 503] then success)
        self.script: dict[str, list[int]] = {}
        #: per phone: a permanent refusal (status, Twilio error code)
        self.reject: dict[str, tuple[int, int]] = {}
        #: the next `throttle` send requests get 429 with Retry-After `retry_after`
        self.throttle = 0
        self.retry_after = 1.0
        self.twilio_messages: list[dict] = []
        #: per phone: seconds to hold the answer after the message was taken (a worker can be
        #: killed, or time out, after the provider has the message)
        self.hold: dict[str, float] = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.server.request_queue_size = 128
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeProvider:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- what a test reads -------------------------------------------------------------------

    def accepted_times(self) -> list[float]:
        with self.lock:
            return sorted(t for t, *_ in self.accepted)

    def max_window(self, width: float = 1.0) -> int:
        """The most messages accepted in any `width`-second window."""
        times = self.accepted_times()
        best, lo = 0, 0
        for hi, t in enumerate(times):
            while t - times[lo] >= width:
                lo += 1
            best = max(best, hi - lo + 1)
        return best

    # -- behaviour ---------------------------------------------------------------------------

    def _decide(self, to: str) -> tuple[int, float | None, int | None]:
        """(status, retry_after, twilio code) for a send to `to`."""
        with self.lock:
            if self.throttle > 0:
                self.throttle -= 1
                return 429, self.retry_after, 20429
            if to in self.reject:
                status, code = self.reject[to]
                return status, None, code
            queue = self.script.get(to)
            if queue:
                return queue.pop(0), None, None
        return 200, None, None

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: dict, headers: dict | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> bytes:
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def do_POST(self) -> None:
                raw = self._body()
                path = urlparse(self.path).path
                if fake.latency:
                    time.sleep(fake.latency)
                if path == "/hook":
                    return self._webhook(raw)
                if path.endswith("/Messages.json"):
                    return self._twilio_create(raw)
                self._answer(404, {"error": "no such path"})

            def do_GET(self) -> None:
                url = urlparse(self.path)
                if url.path.endswith("/Messages.json"):
                    q = parse_qs(url.query)
                    to = (q.get("To") or [""])[0]
                    with fake.lock:
                        found = [m for m in fake.twilio_messages if not to or m["to"] == to]
                    return self._answer(
                        200,
                        {
                            "messages": found,
                            "page": 0,
                            "page_size": 50,
                            "next_page_uri": None,
                            "uri": url.path,
                        },
                    )
                self._answer(404, {"error": "no such path"})

            def _webhook(self, raw: bytes) -> None:
                expected = (
                    "sha256=" + hmac.new(fake.secret.encode(), raw, hashlib.sha256).hexdigest()
                )
                if not hmac.compare_digest(expected, self.headers.get("X-Prosaas-Signature", "")):
                    with fake.lock:
                        fake.bad_signatures += 1
                    return self._answer(401, {"error": "bad signature"})
                msg = json.loads(raw)
                key = self.headers.get("Idempotency-Key", "")
                status, retry_after, _ = fake._decide(msg["to"])
                t = time.time()
                with fake.lock:
                    fake.requests.append((t, status))
                    if status == 200:
                        if key in fake.keys:
                            fake.repeats[key] += 1
                        else:
                            fake.accepted.append((t, key, msg["to"], msg["body"]))
                        fake.keys[key] += 1
                if status == 429:
                    return self._answer(
                        429, {"error": "slow down"}, {"Retry-After": f"{retry_after:g}"}
                    )
                if status != 200:
                    return self._answer(status, {"error": f"status {status}"})
                time.sleep(fake.hold.get(msg["to"], 0))
                self._answer(200, {"id": f"wh-{key}"})

            def _twilio_create(self, raw: bytes) -> None:
                form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
                to = form.get("To", "")
                status, retry_after, code = fake._decide(to.removeprefix("whatsapp:"))
                t = time.time()
                with fake.lock:
                    fake.requests.append((t, status))
                if status == 429:
                    return self._answer(
                        429,
                        {"code": code, "message": "Too Many Requests", "status": 429},
                        {"Retry-After": f"{retry_after:g}"},
                    )
                if status >= 400:
                    return self._answer(
                        status,
                        {
                            "code": code or status,
                            "message": f"refused ({status})",
                            "status": status,
                        },
                    )
                sid = "SM" + secrets.token_hex(16)
                msg = {
                    "sid": sid,
                    "account_sid": ACCOUNT_SID,
                    "to": to,
                    "from": form.get("From"),
                    "body": form.get("Body"),
                    "status": "queued",
                    "status_callback": form.get("StatusCallback"),
                    "date_created": format_datetime(datetime.now(UTC), usegmt=True),
                    "date_sent": None,
                }
                with fake.lock:
                    fake.twilio_messages.append(msg)
                    fake.accepted.append((t, sid, to, form.get("Body", "")))
                    fake.keys[sid] += 1
                time.sleep(fake.hold.get(to.removeprefix("whatsapp:"), 0))
                self._answer(201, msg)

        return Handler


def twilio_signature(url: str, params: dict[str, str], token: str = AUTH_TOKEN) -> str:
    """The ``X-Twilio-Signature`` Twilio would send for a form POST to `url`."""
    from twilio.request_validator import RequestValidator

    return RequestValidator(token).compute_signature(url, params)


def provider_env(fake: FakeProvider) -> dict[str, str]:
    """The settings pointing every built-in provider at `fake`."""
    return {
        "BROADCAST_WEBHOOK_URL": f"{fake.url}/hook",
        "BROADCAST_WEBHOOK_SECRET": fake.secret,
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "BROADCAST_TWILIO_API_BASE": fake.url,
        "BROADCAST_TWILIO_FROM": FROM,
        "BROADCAST_TWILIO_WHATSAPP_FROM": FROM,
    }


# -- database and API helpers of the tests -------------------------------------------------


def phone(i: int) -> str:
    """A valid US number, distinct for each `i` below 10,000,000."""
    return f"+1415{2000000 + i:07d}"


def add_leads(runtime, business_id: int, leads: list[dict]) -> list[int]:
    """Insert leads (dicts of lead columns) for `business_id`; their ids in order."""
    from prosaas_core.models import Lead

    keys = {k for lead in leads for k in lead}
    defaults = {"status": "new"}
    rows = [
        {"business_id": business_id, **{k: lead.get(k, defaults.get(k)) for k in keys}}
        for lead in leads
    ]
    table = Lead.__table__
    with runtime.session() as s:
        res = s.execute(table.insert().returning(table.c.id, sort_by_parameter_order=True), rows)
        return [r[0] for r in res]


def many_leads(runtime, business_id: int, n: int) -> list[int]:
    return add_leads(
        runtime, business_id, [{"name": f"Lead {i}", "phone": phone(i)} for i in range(n)]
    )


def new_business(runtime, name: str = "Other") -> int:
    from sqlalchemy import text

    with runtime.session() as s:
        return s.execute(
            text("INSERT INTO businesses (name) VALUES (:n) RETURNING id"), {"n": name}
        ).scalar()


def token_for(runtime, business_id: int) -> dict:
    from prosaas_core.testing import auth_header

    return auth_header(runtime, business_id)


def wait_broadcast(
    client, auth, bid: int, *, timeout: float = 60, statuses=("succeeded", "cancelled", "failed")
) -> dict:
    end = time.monotonic() + timeout
    while True:
        b = client.get(f"/api/broadcasts/{bid}", headers=auth).get_json()
        if b["status"] in statuses:
            return b
        if time.monotonic() > end:
            raise AssertionError(f"broadcast {bid} still {b['status']} after {timeout}s: {b}")
        time.sleep(0.1)


def job(runtime, job_id: int) -> dict:
    from sqlalchemy import text

    with runtime.session() as s:
        row = s.execute(
            text("SELECT status, result, error, attempts FROM background_jobs WHERE id = :i"),
            {"i": job_id},
        ).one()
        return dict(row._mapping)
