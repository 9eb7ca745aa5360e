"""A local stand-in for Twilio's Calls API, for tests and the benchmark (not used in production).

`FakeTwilio` answers, over plain HTTP on 127.0.0.1 with basic auth:

- ``POST /2010-04-01/Accounts/<AC>/Calls.json``: creates a call, then plays it out on its own
  thread: signed status callbacks ``initiated``, ``ringing``, ``in-progress`` and, after
  `min_duration`..`max_duration` seconds, the final one; with ``Record=true`` a signed recording
  callback follows, whose ``RecordingUrl`` is served by this same server;
- ``GET .../Calls.json?To=&From=`` (a list) and ``GET .../Calls/<sid>.json`` (one call);
- ``GET /rec/<RecordingSid>.mp3``: the recording (deterministic bytes).

A call is *live* from its creation until its final callback is sent; the server counts live
calls per caller id (``From``, one number per business in the tests) and remembers the most it
saw. Per destination number a test can `plan` behaviour: ``outcome`` (``busy``,
``no-answer``...), ``drop`` (no status callbacks at all; the call still ends), ``replay`` (each
callback twice, then a late ``ringing``), ``create_delay`` (the call exists at once but the
answer comes late: a client killed meanwhile never learns the sid) and ``error`` (``True`` for
a 400, or a status such as 429 or 500; no call is created), ``error_times`` times (default:
always).
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import threading
import time
import urllib.parse
from collections import defaultdict
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sqlalchemy import text

TEST_ACCOUNT_SID = "AC" + "2" * 32
TEST_AUTH_TOKEN = "outbound-test-token"
FINAL = ("completed", "busy", "no-answer", "failed", "canceled")


def sign(token: str, url: str, params: dict[str, str]) -> str:
    """X-Twilio-Signature as Twilio computes it (the SDK's own algorithm)."""
    from twilio.request_validator import RequestValidator

    return RequestValidator(token).compute_signature(url, params)


def recording_bytes(recording_sid: str, size: int = 4096) -> bytes:
    seed = hashlib.sha256(recording_sid.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


class FakeCall:
    def __init__(self, sid: str, form: dict[str, list[str]]) -> None:
        one = {k: v[-1] for k, v in form.items()}
        self.sid = sid
        self.to, self.from_ = one.get("To", ""), one.get("From", "")
        self.status_callback = one.get("StatusCallback")
        self.events = set(form.get("StatusCallbackEvent", []))
        self.record = one.get("Record", "").lower() == "true"
        self.recording_callback = one.get("RecordingStatusCallback")
        self.params = one
        self.status = "queued"
        self.created = datetime.now(UTC)
        self.recording_sid = "RE" + sid[2:]

    def as_json(self, account: str) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "account_sid": account,
            "to": self.to,
            "from": self.from_,
            "status": self.status,
            "direction": "outbound-api",
            "date_created": format_datetime(self.created),
            "uri": f"/2010-04-01/Accounts/{account}/Calls/{self.sid}.json",
        }


class FakeTwilio:
    """A threaded HTTP server; use as a context manager or call start()/stop()."""

    def __init__(
        self,
        *,
        account_sid: str = TEST_ACCOUNT_SID,
        auth_token: str = TEST_AUTH_TOKEN,
        min_duration: float = 0.1,
        max_duration: float = 0.4,
        seed: int = 7,
    ) -> None:
        self.account_sid, self.auth_token = account_sid, auth_token
        self.min_duration, self.max_duration = min_duration, max_duration
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.calls: dict[str, FakeCall] = {}
        self.plans: dict[str, dict[str, Any]] = {}
        self.creates: dict[str, int] = defaultdict(int)  # per To
        self.refused: dict[str, int] = defaultdict(int)  # error answers, per To
        self.create_times: list[float] = []  # time.monotonic() of each create
        self.final_times: list[float] = []  # ... and of each call's end
        self.live: dict[str, int] = defaultdict(int)  # per From
        self.max_live: dict[str, int] = defaultdict(int)
        self.callback_codes: list[int] = []
        self.callback_seconds: list[float] = []  # how long prosaas took to answer each
        self.recordings_served: dict[str, int] = defaultdict(int)
        self.finished = 0
        self.stopped = threading.Event()
        self._seq = 0
        import urllib3

        self.http = urllib3.PoolManager(maxsize=64, block=False)
        ThreadingHTTPServer.request_queue_size = 256
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread: threading.Thread | None = None

    # -- set-up -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def plan(self, to: str, **behaviour: Any) -> None:
        """Behaviour for calls to `to`: outcome=, drop=, replay=, create_delay=, error=,
        error_times=."""
        with self.lock:
            self.plans[to] = behaviour

    def start(self) -> FakeTwilio:
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FakeTwilio:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what tests read ----------------------------------------------------------------------

    def total_live(self) -> int:
        with self.lock:
            return sum(self.live.values())

    def sids_to(self, to: str) -> list[str]:
        with self.lock:
            return [c.sid for c in self.calls.values() if c.to == to]

    # -- the calls ----------------------------------------------------------------------------

    def _create(self, form: dict[str, list[str]]) -> tuple[int, dict[str, Any], float]:
        to = form.get("To", [""])[-1]
        with self.lock:
            plan = self.plans.get(to, {})
            if plan.get("error") and plan.get("error_times", 1_000_000) > 0:
                plan["error_times"] = plan.get("error_times", 1_000_000) - 1
                self.refused[to] += 1
                code = 400 if plan["error"] is True else int(plan["error"])
                return code, {"code": 21211 if code == 400 else code, "message": "refused"}, 0.0
            plan = dict(plan)
            self._seq += 1
            sid = "CA" + hashlib.md5(f"{id(self)}:{self._seq}".encode()).hexdigest()
            call = FakeCall(sid, form)
            self.calls[sid] = call
            self.creates[to] += 1
            self.create_times.append(time.monotonic())
            self.live[call.from_] += 1
            self.max_live[call.from_] = max(self.max_live[call.from_], self.live[call.from_])
            duration = self.random.uniform(self.min_duration, self.max_duration)
        threading.Thread(target=self._play, args=(call, plan, duration), daemon=True).start()
        return 201, call.as_json(self.account_sid), float(plan.get("create_delay", 0.0))

    def _play(self, call: FakeCall, plan: dict[str, Any], duration: float) -> None:
        """The call's life: it ends `duration` after its creation whatever prosaas does with
        the progress callbacks, which go out meanwhile on their own thread (as with Twilio,
        a slow webhook delays the callbacks, not the call)."""
        outcome = plan.get("outcome", "completed")
        early = ["initiated", "ringing"] + (["in-progress"] if outcome == "completed" else [])
        threading.Thread(target=self._progress, args=(call, early, plan), daemon=True).start()
        if self.stopped.wait(duration):
            return
        with self.lock:
            call.status = outcome
            self.live[call.from_] -= 1  # before the callback: the slot frees after this
            self.finished += 1
            self.final_times.append(time.monotonic())
        self._status_callback(call, outcome, plan, duration=duration)
        if plan.get("replay"):
            self._status_callback(call, "ringing", plan)
        if call.record and call.recording_callback and outcome == "completed":
            self._post(
                call.recording_callback,
                {
                    "AccountSid": self.account_sid,
                    "CallSid": call.sid,
                    "RecordingSid": call.recording_sid,
                    "RecordingUrl": f"{self.url}/rec/{call.recording_sid}",
                    "RecordingStatus": "completed",
                    "RecordingDuration": str(max(1, int(duration))),
                },
            )

    def _progress(self, call: FakeCall, statuses: list[str], plan: dict[str, Any]) -> None:
        for status in statuses:
            with self.lock:
                if call.status in FINAL:
                    return
                call.status = status
            self._status_callback(call, status, plan)

    def _status_callback(
        self, call: FakeCall, status: str, plan: dict[str, Any], duration: float | None = None
    ) -> None:
        if plan.get("drop") or not call.status_callback:
            return
        event = {"in-progress": "answered"}.get(status, status)
        if status not in FINAL and event not in call.events:
            return
        params = {
            "AccountSid": self.account_sid,
            "CallSid": call.sid,
            "CallStatus": status,
            "To": call.to,
            "From": call.from_,
            "Direction": "outbound-api",
        }
        if duration is not None:
            params["CallDuration"] = str(int(duration))
        for _ in range(2 if plan.get("replay") else 1):
            self._post(call.status_callback, params)

    def _post(self, url: str, params: dict[str, str]) -> None:
        """POST a signed callback (kept-alive connections, as Twilio's senders keep them)."""
        import urllib3

        began = time.monotonic()
        try:
            resp = self.http.request(
                "POST",
                url,
                body=urllib.parse.urlencode(params),
                headers={
                    "X-Twilio-Signature": sign(self.auth_token, url, params),
                    "Content-Type": "application/x-www-form-urlencoded",
                },
                timeout=urllib3.Timeout(connect=5, read=10),
                # a kept-alive connection the server has just closed (no answer at all: urllib3
                # counts it as a read error), or a refused connect: sent again, as Twilio
                # retries a callback that could not be delivered (a callback is idempotent)
                retries=urllib3.Retry(total=2, read=1, allowed_methods=None, redirect=False),
            )
            code = resp.status
        except urllib3.exceptions.HTTPError:
            code = 0  # prosaas unreachable: a lost callback
        with self.lock:
            self.callback_codes.append(code)
            self.callback_seconds.append(time.monotonic() - began)

    # -- HTTP ---------------------------------------------------------------------------------

    def _handler(self):
        fake = self
        expected = (
            "Basic " + base64.b64encode(f"{fake.account_sid}:{fake.auth_token}".encode()).decode()
        )
        prefix = f"/2010-04-01/Accounts/{fake.account_sid}/Calls"

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _json(self, code: int, obj: Any) -> None:
                self._send(code, json.dumps(obj).encode())

            def _authorized(self) -> bool:
                if self.headers.get("Authorization") == expected:
                    return True
                self._json(401, {"code": 20003, "message": "Authenticate"})
                return False

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                if not self._authorized():
                    return
                if self.path.split("?")[0] != prefix + ".json":
                    return self._json(404, {"code": 20404, "message": "Not found"})
                code, body, delay = fake._create(form)
                if delay:
                    fake.stopped.wait(delay)
                self._json(code, body)

            def do_GET(self) -> None:  # noqa: N802
                path, _, query = self.path.partition("?")
                if path.startswith("/rec/") and path.endswith(".mp3"):
                    if not self._authorized():
                        return
                    sid = path[len("/rec/") : -len(".mp3")]
                    with fake.lock:
                        fake.recordings_served[sid] += 1
                    return self._send(200, recording_bytes(sid), "audio/mpeg")
                if not self._authorized():
                    return
                if path == prefix + ".json":
                    q = {k: v[-1] for k, v in urllib.parse.parse_qs(query).items()}
                    with fake.lock:
                        found = [
                            c.as_json(fake.account_sid)
                            for c in fake.calls.values()
                            if c.to == q.get("To", c.to) and c.from_ == q.get("From", c.from_)
                        ]
                    return self._json(
                        200,
                        {
                            "calls": found,
                            "page": 0,
                            "page_size": 50,
                            "uri": path,
                            "first_page_uri": path,
                            "next_page_uri": None,
                            "previous_page_uri": None,
                            "start": 0,
                            "end": len(found),
                        },
                    )
                if path.startswith(prefix + "/") and path.endswith(".json"):
                    sid = path[len(prefix) + 1 : -len(".json")]
                    with fake.lock:
                        call = fake.calls.get(sid)
                    if call is None:
                        return self._json(404, {"code": 20404, "message": "Not found"})
                    return self._json(200, call.as_json(fake.account_sid))
                self._json(404, {"code": 20404, "message": "Not found"})

        return Handler


# -- database helpers -------------------------------------------------------------------------

CALLER = "+12125550100"


def add_business(runtime, name: str, caller: str = CALLER) -> tuple[int, dict[str, str]]:
    """A business with a token (as headers) and `caller` as its one configured number."""
    from prosaas_core.testing import bearer, business_with_token

    business_id, token = business_with_token(runtime, name)
    with runtime.session() as s:
        s.execute(
            text("INSERT INTO outbound_caller_ids (business_id, phone) VALUES (:b, :p)"),
            {"b": business_id, "p": caller},
        )
    return business_id, bearer(token)


def phone(n: int, area: str = "212") -> str:
    return f"+1{area}{2000000 + n:07d}"


def add_leads(runtime, business_id: int, phones: list[str | None], tags=None) -> list[int]:
    with runtime.session() as s:
        return [
            s.execute(
                text(
                    "INSERT INTO leads (business_id, phone, tags) VALUES (:b, :p, :t) RETURNING id"
                ),
                {"b": business_id, "p": p, "t": json.dumps(tags) if tags else None},
            ).scalar_one()
            for p in phones
        ]


# -- API helpers -----------------------------------------------------------------------------


URL = "/api/outbound-calls"


def campaign(client, auth, cid) -> dict:
    return client.get(f"{URL}/{cid}", headers=auth).get_json()


def start(client, auth, **kw) -> int:
    resp = client.post(URL, json={"all": True, "caller_id": CALLER, **kw}, headers=auth)
    assert resp.status_code == 202, resp.get_json()
    return resp.get_json()["campaign_id"]


def max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] > window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best
