"""`prosaas serve` against slow clients: requests are read whole before an app thread sees them,
so 200 sockets trickling a body do not stop /healthz or an authenticated GET /api/jobs."""

from __future__ import annotations

import socket
import time

import pytest
import requests

from prosaas_core.testing import ServeProcess, bearer, business_with_token

pytestmark = pytest.mark.slow

SLOW_SOCKETS = 200


def _slow_socket(port: int, path: str) -> socket.socket:
    """A client that announces a 100 kB body and sends one byte of it."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(
        (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Content-Length: 100000\r\n\r\n{"
        ).encode()
    )
    return s


def test_slow_bodies_hold_no_thread(env, runtime, tmp_path):
    _, token = business_with_token(runtime, "A")
    srv = ServeProcess({**env}, workers=1, threads=4, log_path=tmp_path / "serve.log")
    with srv:
        socks = [
            _slow_socket(srv.port, "/webhooks/twilio/recording" if i % 2 else "/api/jobs")
            for i in range(SLOW_SOCKETS)
        ]
        try:
            time.sleep(0.5)  # every slow socket accepted and waiting for its body
            for _ in range(3):
                for path, headers in (("/healthz", {}), ("/api/jobs", bearer(token))):
                    t0 = time.monotonic()
                    r = requests.get(srv.url + path, headers=headers, timeout=5)
                    elapsed = time.monotonic() - t0
                    assert r.status_code == 200, r.text
                    assert elapsed < 1.0, f"{path} took {elapsed:.2f}s behind slow clients"
        finally:
            for s in socks:
                s.close()


def test_incomplete_request_gets_408_json_after_read_timeout(env, tmp_path):
    srv = ServeProcess(
        {**env, "PROSAAS_READ_TIMEOUT": "1"}, workers=1, log_path=tmp_path / "serve.log"
    )
    with srv:
        s = _slow_socket(srv.port, "/api/jobs")
        s.settimeout(10)
        t0 = time.monotonic()
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
        elapsed = time.monotonic() - t0
        s.close()
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert b"application/json" in answer and b'"error"' in answer
        # 1 s timeout, checked by the event loop about once a second
        assert 0.5 < elapsed < 8, elapsed


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
    ],
)
def test_gunicorn_errors_are_json(env, tmp_path, request_bytes, status):
    with ServeProcess({**env}, workers=1, log_path=tmp_path / "serve.log") as srv:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        s.sendall(request_bytes)
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
        s.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(f"HTTP/1.1 {status}".encode()), answer[:200]
        assert b"Content-Type: application/json" in head
        import json

        assert set(json.loads(body)) == {"error", "details"}


def test_expect_100_continue_is_answered_before_the_body(env, runtime, tmp_path):
    with ServeProcess({**env}, workers=1, log_path=tmp_path / "serve.log") as srv:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        s.sendall(
            b"POST /api/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2\r\nExpect: 100-continue\r\n\r\n"
        )
        assert s.recv(4096).startswith(b"HTTP/1.1 100 Continue")
        s.sendall(b"{}")
        answer = b""
        while b"HTTP/1.1 401" not in answer:  # gunicorn may repeat the 100 first: allowed
            chunk = s.recv(4096)
            assert chunk, answer
            answer += chunk
        s.close()
