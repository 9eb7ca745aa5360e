"""The recordings bench's Twilio stand-in in a process of its own: the same files, the same
checks and the same latency as ``prosaas_recordings.testing.StubTwilio``, with less Python per
request and no share of the bench's GIL.

``StubTwilio`` is a ``ThreadingHTTPServer`` inside the bench process: every request wakes a
handler thread that parses headers with ``email.parser`` and competes for the GIL with the
bench's own threads (the 18 bare download threads of the ceiling run in that same process).
This server is one asyncio loop in a child process. What it shares with ``StubTwilio``:

* ``GET /rec/<business_id>/<RecordingSid>.mp3`` only, with HTTP basic auth (anything else
  401, counted in ``unauthorized``), keep-alive connections (HTTP/1.1);
* every response waits ``latency`` seconds (the bench's 100 ms per file) and carries the same
  bytes (``recording_bytes``) with a Content-Length;
* concurrent requests per business are counted from the parsed request until just before the
  last byte goes out (``max_active``), exactly as ``StubTwilio`` counts them;
* per transfer: request time, last byte time (``time.monotonic``: the system-wide
  CLOCK_MONOTONIC, so the bench compares it with its own clock).

The bench reads it all back with ``GET /_stats`` (JSON) and polls ``GET /_served/<prefix>``
(a count) while downloads run; neither is a Twilio path and neither needs auth.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import subprocess
import sys
import time
from collections import defaultdict

from prosaas_recordings.testing import recording_bytes


class _State:
    def __init__(self, account_sid: str, auth_token: str, size: int, latency: float) -> None:
        self.expected = "Basic " + base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode()
        self.size, self.latency = size, latency
        self.active: dict[int, int] = defaultdict(int)
        self.max_active: dict[int, int] = defaultdict(int)
        self.served: dict[str, int] = defaultdict(int)
        self.request_times: dict[str, list[float]] = defaultdict(list)
        self.transfers: list[tuple[int, str, float, float]] = []
        self.unauthorized = 0
        self.last_served = 0.0

    def stats(self) -> bytes:
        return json.dumps(
            {
                "max_active": self.max_active,
                "served": self.served,
                "request_times": self.request_times,
                "transfers": self.transfers,
                "unauthorized": self.unauthorized,
                "last_served": self.last_served,
            }
        ).encode()


def _head(code: int, reason: str, length: int, ctype: str = "") -> bytes:
    extra = f"Content-Type: {ctype}\r\n" if ctype else ""
    return f"HTTP/1.1 {code} {reason}\r\n{extra}Content-Length: {length}\r\n\r\n".encode()


async def _serve(state: _State, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
    try:
        while True:
            try:
                raw = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            lines = raw.decode("latin-1").split("\r\n")
            method, path, _ = (lines[0].split(" ") + ["", ""])[:3]
            headers = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            if method == "GET" and path.startswith("/_"):
                if path.startswith("/_served/"):  # transfers done of the sids with a prefix
                    prefix = path[len("/_served/") :]
                    n = sum(v for k, v in state.served.items() if k.startswith(prefix))
                    body = str(n).encode()
                else:
                    body = state.stats()
                writer.write(_head(200, "OK", len(body), "application/json") + body)
                await writer.drain()
                continue
            parts = path.strip("/").split("/")
            if (
                method != "GET"
                or len(parts) != 3
                or parts[0] != "rec"
                or not parts[2].endswith(".mp3")
            ):
                writer.write(_head(404, "Not Found", 0))
                await writer.drain()
                continue
            if headers.get("authorization") != state.expected:
                state.unauthorized += 1
                writer.write(_head(401, "Unauthorized", 0))
                await writer.drain()
                continue
            business, sid = int(parts[1]), parts[2][: -len(".mp3")]
            started = time.monotonic()
            state.request_times[sid].append(started)
            state.active[business] += 1
            state.max_active[business] = max(state.max_active[business], state.active[business])
            try:
                await asyncio.sleep(state.latency)
                body = recording_bytes(sid, state.size)
                writer.write(_head(200, "OK", len(body), "audio/mpeg") + body[:-1])
            finally:
                # as StubTwilio: no longer active just before the last byte goes out, so a
                # client starting its next download on the whole body is never counted twice
                state.active[business] -= 1
            writer.write(body[-1:])
            state.served[sid] += 1
            state.last_served = time.monotonic()
            state.transfers.append((business, sid, started, state.last_served))
            await writer.drain()
    finally:
        writer.close()


def _main(account_sid: str, auth_token: str, size: int, latency: float) -> None:
    state = _State(account_sid, auth_token, size, latency)

    async def run() -> None:
        server = await asyncio.start_server(
            lambda r, w: _serve(state, r, w), "127.0.0.1", 0, backlog=256
        )
        print(server.sockets[0].getsockname()[1], flush=True)  # the port, for StubProcess
        async with server:
            await server.serve_forever()

    asyncio.run(run())


class StubProcess:
    """The stand-in in a child process; the attributes the bench reads are filled by
    `refresh()` (one ``GET /_stats``)."""

    def __init__(self, *, account_sid: str, auth_token: str, size: int, latency: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, account_sid, auth_token, str(size), str(latency)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            self.proc.kill()
            raise RuntimeError("the stub process did not start")
        self.port = int(line)
        self.max_active: dict[int, int] = {}
        self.served: dict[str, int] = {}
        self.request_times: dict[str, list[float]] = {}
        self.transfers: list[tuple[int, str, float, float]] = []
        self.unauthorized = 0
        self.last_served = 0.0

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, business_id: int, recording_sid: str) -> str:
        return f"http://{self.host}/rec/{business_id}/{recording_sid}"

    def _get(self, path: str) -> bytes:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path)
            return conn.getresponse().read()
        finally:
            conn.close()

    def served_count(self, prefix: str) -> int:
        """Complete transfers of the RecordingSids starting with `prefix` (one small GET)."""
        return int(self._get(f"/_served/{prefix}"))

    def refresh(self) -> StubProcess:
        data = json.loads(self._get("/_stats"))
        self.max_active = {int(k): v for k, v in data["max_active"].items()}
        self.served = data["served"]
        self.request_times = data["request_times"]
        self.transfers = [tuple(t) for t in data["transfers"]]  # type: ignore[misc]
        self.unauthorized = data["unauthorized"]
        self.last_served = data["last_served"]
        return self

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
