"""A gunicorn worker that reads each request whole before an app thread sees it.

gunicorn's ``gthread`` worker hands a connection to a thread as soon as its first bytes arrive;
the thread then blocks reading headers and body, so a few clients sending slowly hold every
thread and the API stops answering (even ``/healthz``). This worker keeps the same thread pool
but buffers the request on the worker's event loop first (non-blocking reads, one poller for
every connection): a thread only ever gets a request that is complete in memory. A request
that is not complete within ``read_timeout`` seconds is answered 408 and closed.

Errors gunicorn answers itself (400, 414 URI too long, 431 headers too large, ...) are written
as the API's JSON ``{"error", "details"}`` instead of gunicorn's HTML page.
"""

from __future__ import annotations

import errno
import json
import selectors
import socket
import struct
import time
from functools import partial
from typing import Any

from gunicorn import util
from gunicorn.http.unreader import SocketUnreader
from gunicorn.workers.gthread import ThreadWorker

#: header block larger than this is handed to gunicorn's parser as is (it answers 431/414)
MAX_HEAD = 64 * 1024
_RECV = 256 * 1024


def json_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's own error answer, as JSON (replaces `gunicorn.util.write_error`)."""
    body = json.dumps({"error": reason, "details": mesg or None}).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode("latin1")
    util.write_nonblock(sock, head + body)


def _chunked_complete(body: bytes | bytearray) -> bool:
    """Whether a chunked body holds its last (zero-size) chunk and trailer end."""
    pos = 0
    while True:
        eol = body.find(b"\r\n", pos)
        if eol < 0:
            return False
        size_field = bytes(body[pos:eol]).split(b";", 1)[0].strip()
        try:
            size = int(size_field, 16)
        except ValueError:
            return True  # malformed: let gunicorn's parser answer 400
        if size == 0:
            return body.find(b"\r\n\r\n", eol) >= 0 or body[eol : eol + 4] == b"\r\n\r\n"
        pos = eol + 2 + size + 2
        if pos > len(body):
            return False


def expects_continue(buf: bytes | bytearray) -> bool:
    """Whether a complete header block asks for ``100 Continue`` before the body is sent."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return False
    head = bytes(buf[:end]).lower()
    return b"\r\nexpect:" in head and b"100-continue" in head and b"http/1.0" not in head[:200]


def request_complete(buf: bytes | bytearray, max_body: int) -> bool:
    """Whether `buf` holds a whole request (or enough for gunicorn to refuse it at once)."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return len(buf) > MAX_HEAD
    head = bytes(buf[:end]).decode("latin1").lower()
    received = len(buf) - (end + 4)  # not a slice: this runs after every recv of a big body
    length, chunked = 0, False
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        name, value = name.strip(), value.strip()
        if name == "content-length":
            try:
                length = int(value)
            except ValueError:
                return True  # gunicorn answers 400
        elif name == "transfer-encoding" and "chunked" in value:
            chunked = True
    if chunked:
        return received > max_body or _chunked_complete(buf[end + 4 :])
    # an announced body over the limit is refused by the app (413) without reading it
    return length > max_body or received >= length


class PrebufferedUnreader(SocketUnreader):
    """gunicorn's socket unreader, starting with a request already read whole.

    Reads slice the buffered bytes at an offset. gunicorn's own unreader copies everything it
    holds twice on every ``read(size)``: a 15 MB body held there and read 64 KiB at a time (a
    streamed CSV import) moved gigabytes and kept its thread busy for seconds."""

    def __init__(self, sock: Any, data: bytes) -> None:
        super().__init__(sock)
        self._data = data
        self._pos = 0

    def _take(self, size: int | None = None) -> bytes:
        end = len(self._data) if size is None else min(len(self._data), self._pos + size)
        out = self._data[self._pos : end]
        self._pos = end
        if self._pos >= len(self._data):
            self._data, self._pos = b"", 0
        return out

    def read(self, size: int | None = None, read_ahead: int | None = None) -> bytes:
        if size is not None and not isinstance(size, int):
            raise TypeError("size parameter must be an int or long.")
        if size == 0:
            return b""
        if size is not None and size < 0:
            size = None
        if self._pos >= len(self._data):  # all handed out: gunicorn's own path from here
            extra = {"read_ahead": read_ahead} if read_ahead is not None else {}
            return super().read(size, **extra)
        out = self._take(size)
        if size is not None and len(out) < size:
            extra = {"read_ahead": read_ahead} if read_ahead is not None else {}
            out += super().read(size - len(out), **extra)
        return out

    def unread(self, data: bytes) -> None:
        self._data = bytes(data) + self._data[self._pos :]
        self._pos = 0

    def take_buffered(self) -> bytes:
        return self._take() + super().take_buffered()


class BufferingWorker(ThreadWorker):
    """``gthread`` with requests buffered on the event loop before they reach a thread."""

    #: set by `prosaas serve` (class attributes: gunicorn builds the worker itself)
    read_timeout: float = 30.0
    max_body: int = 16 * 1024 * 1024

    def init_process(self) -> None:
        self.buffering: dict[Any, float] = {}
        # one process-wide switch, in the worker process only: gunicorn's error pages as JSON
        util.write_error = json_error
        super().init_process()

    def accept(self, listener: Any) -> None:
        try:
            client_sock, client_addr = listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        from gunicorn.workers.gthread import TConn

        conn = TConn(self.cfg, client_sock, client_addr, listener.getsockname())
        if self.cfg.is_ssl:  # TLS bytes cannot be pre-read: the plain gthread path
            client_sock.setblocking(True)
            self.enqueue_req(conn)
            return
        self._buffer(conn)

    def on_client_socket_readable(self, conn: Any, client: Any) -> None:
        """A kept-alive connection starts its next request: buffer it too."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._buffer(conn)

    def _buffer(self, conn: Any) -> None:
        if not hasattr(conn, "prebuf"):
            # at the OS level, so gunicorn's setblocking(True) keeps it: a client that stops
            # reading its answer frees the thread after read_timeout (send fails, EAGAIN)
            seconds = int(self.read_timeout)
            usec = int((self.read_timeout - seconds) * 1e6)
            conn.sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", seconds, usec)
            )
        conn.prebuf = bytearray()
        conn.continued = False
        conn.sock.setblocking(False)
        self.buffering[conn] = time.monotonic() + self.read_timeout
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._readable, conn))

    def _drop(self, conn: Any) -> None:
        self.buffering.pop(conn, None)
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass
        self.nr_conns -= 1
        conn.close()

    def _readable(self, conn: Any, _sock: Any) -> None:
        try:
            while True:
                data = conn.sock.recv(_RECV)
                if not data:
                    self._drop(conn)  # the client went away before a whole request
                    return
                conn.prebuf += data
                if len(data) < _RECV:
                    break
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._drop(conn)
            return
        if not getattr(conn, "continued", False) and expects_continue(conn.prebuf):
            # the client waits for this before sending its body (curl does, for bodies over
            # 1 kB); gunicorn would only send it once a thread has the request
            conn.continued = True
            try:
                conn.sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")
            except OSError:
                self._drop(conn)
                return
        if request_complete(conn.prebuf, self.max_body):
            self.buffering.pop(conn, None)
            self.poller.unregister(conn.sock)
            conn.data_ready = True
            self.enqueue_req(conn)

    def murder_pending(self) -> None:
        super().murder_pending()
        now = time.monotonic()
        for conn, deadline in list(self.buffering.items()):
            if deadline <= now:
                try:
                    json_error(
                        conn.sock,
                        408,
                        "Request Timeout",
                        f"the request was not received within {self.read_timeout:g} s",
                    )
                except OSError:
                    pass
                self._drop(conn)

    def handle(self, conn: Any) -> Any:
        """In the app thread: feed the buffered bytes to gunicorn's parser, then serve.
        Writes to a client that stops reading give up after `read_timeout`."""
        prebuf = getattr(conn, "prebuf", None)
        if prebuf is not None:
            conn.prebuf = None
            conn.sock.setblocking(True)
            conn.init()
            conn.parser.unreader = PrebufferedUnreader(conn.sock, bytes(prebuf))
        return super().handle(conn)
