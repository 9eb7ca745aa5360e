"""A local stand-in for Twilio's recording media host, for tests and benchmarks.

``StubTwilio`` serves ``GET /rec/<business_id>/<RecordingSid>.mp3`` over plain HTTP on
127.0.0.1 with basic auth, and records what a test wants to assert: requests per recording,
concurrent requests per business (now and the highest seen) and completed transfers. Each
recording can be given a plan of responses consumed one request at a time::

    stub.plan("RE1", ["500", "ok"])      # a 5xx, then the file
    stub.plan("RE2", ["hang"])           # headers never come: a read timeout
    stub.plan("RE3", ["drip"])           # headers and half the body, then a long stall

and ``latency`` delays every response (the benchmark's 100 ms per file).
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TEST_ACCOUNT_SID = "AC" + "1" * 32
TEST_AUTH_TOKEN = "test-auth-token"


def recording_bytes(recording_sid: str, size: int) -> bytes:
    """Deterministic content of a recording, so a test can compare files byte for byte."""
    seed = hashlib.sha256(recording_sid.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


class StubTwilio:
    """A threaded HTTP server; use as a context manager or call start()/stop()."""

    def __init__(
        self,
        *,
        account_sid: str = TEST_ACCOUNT_SID,
        auth_token: str = TEST_AUTH_TOKEN,
        size: int = 32 * 1024,
        latency: float = 0.0,
        hang_seconds: float = 30.0,
    ) -> None:
        self.account_sid, self.auth_token = account_sid, auth_token
        self.size, self.latency, self.hang_seconds = size, latency, hang_seconds
        self.lock = threading.Lock()
        self.plans: dict[str, list[str]] = {}
        self.requests: dict[str, int] = defaultdict(int)
        self.request_times: dict[str, list[float]] = defaultdict(list)
        self.active: dict[int, int] = defaultdict(int)
        self.max_active: dict[int, int] = defaultdict(int)
        self.served: dict[str, int] = defaultdict(int)
        #: (business id, RecordingSid, request start, last byte sent) of every complete transfer
        self.transfers: list[tuple[int, str, float, float]] = []
        self.unauthorized = 0
        self.last_served = 0.0  # time.monotonic() of the last complete transfer
        self.released = threading.Event()  # set on stop: hanging handlers return
        # A listen backlog of 5 (the default) drops SYNs under bursts: 1 s connect stalls.
        ThreadingHTTPServer.request_queue_size = 128
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, business_id: int, recording_sid: str) -> str:
        """The RecordingUrl Twilio would send (without the ``.mp3``)."""
        return f"http://{self.host}/rec/{business_id}/{recording_sid}"

    def plan(self, recording_sid: str, steps: list[str]) -> None:
        """Responses for the next requests of `recording_sid`: ok, 404, 500, hang, drip,
        short, trickle (a slow loris: one byte every 0.1 s until released); after the plan
        runs out every request gets ok."""
        with self.lock:
            self.plans[recording_sid] = list(steps)

    def content(self, recording_sid: str) -> bytes:
        return recording_bytes(recording_sid, self.size)

    def start(self) -> StubTwilio:
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> StubTwilio:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _next_step(self, recording_sid: str) -> str:
        with self.lock:
            self.requests[recording_sid] += 1
            self.request_times[recording_sid].append(time.monotonic())
            steps = self.plans.get(recording_sid)
            return steps.pop(0) if steps else "ok"

    def _handler(self):
        stub = self
        expected = (
            "Basic " + base64.b64encode(f"{stub.account_sid}:{stub.auth_token}".encode()).decode()
        )

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as two writes

            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                parts = self.path.strip("/").split("/")
                if len(parts) != 3 or parts[0] != "rec" or not parts[2].endswith(".mp3"):
                    return self._status(404)
                if self.headers.get("Authorization") != expected:
                    with stub.lock:
                        stub.unauthorized += 1
                    return self._status(401)
                business_id, sid = int(parts[1]), parts[2][: -len(".mp3")]
                with stub.lock:
                    stub.active[business_id] += 1
                    stub.max_active[business_id] = max(
                        stub.max_active[business_id], stub.active[business_id]
                    )
                self.business_id, self.counted = business_id, True
                self.started = time.monotonic()
                try:
                    self._serve(sid, stub._next_step(sid))
                finally:
                    self._done()

            def _done(self) -> None:
                """This request no longer counts as active (once only)."""
                if self.counted:
                    self.counted = False
                    with stub.lock:
                        stub.active[self.business_id] -= 1

            def _status(self, code: int) -> None:
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _serve(self, sid: str, step: str) -> None:
                if stub.latency:
                    time.sleep(stub.latency)
                if step == "hang":
                    stub.released.wait(stub.hang_seconds)
                    return self._status(503)
                if step.isdigit():
                    return self._status(int(step))
                body = stub.content(sid)
                self.send_response(200)
                self.send_header("Content-Type", "audio/mpeg")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if step == "trickle":
                    for i in range(len(body)):
                        if stub.released.wait(0.1):
                            break
                        self.wfile.write(body[i : i + 1])
                        self.wfile.flush()
                    self.close_connection = True
                    return
                if step in ("drip", "short"):
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    if step == "drip":
                        stub.released.wait(stub.hang_seconds)
                    self.close_connection = True
                    return
                # The request stops counting as active before its last byte goes out, so a
                # client that starts its next download as soon as it has the whole body (as the
                # slots allow) is never counted twice by a handler thread that is slow to
                # return; transfers that truly overlap are all counted while they last.
                self.wfile.write(body[:-1])
                self._done()
                self.wfile.write(body[-1:])
                with stub.lock:
                    stub.served[sid] += 1
                    stub.last_served = time.monotonic()
                    stub.transfers.append((self.business_id, sid, self.started, stub.last_served))

        return Handler


def sign(token: str, url: str, params: dict[str, str]) -> str:
    """X-Twilio-Signature exactly as Twilio computes it (the SDK's own algorithm)."""
    from twilio.request_validator import RequestValidator

    return RequestValidator(token).compute_signature(url, params)


def make_call(runtime: Any, business_id: int, call_sid: str) -> None:
    """Insert a call row, as the app does when a call starts."""
    from sqlalchemy import insert

    from prosaas_recordings.tables import calls

    with runtime.session() as s:
        s.execute(insert(calls).values(business_id=business_id, call_sid=call_sid))


def call_sid(n: int) -> str:
    return f"CA{n:032x}"


def recording_sid(n: int) -> str:
    return f"RE{n:032x}"
