"""Fetch one recording to disk: allowed hosts only, streamed, size-capped, atomically renamed.

The file appears at its final path only complete and of the size the server announced: bytes go
to a temporary file under ``RECORDINGS_DIR/.partial`` that is renamed (same filesystem, atomic)
at the end and removed on any failure.
"""

from __future__ import annotations

import base64
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import urllib3

from prosaas_recordings.deadline import WATCHDOG, response_socket
from prosaas_recordings.httpclient import HttpClient

CHUNK = 64 * 1024
MAX_REDIRECTS = 3
RETRYABLE_STATUS = {404, 408, 425, 429}  # 404: Twilio has not finished the recording yet
REDIRECT_STATUS = {301, 302, 303, 307, 308}
# Transport failures, all retryable: urllib3's own, and OSError from the socket or the file.
TRANSPORT_ERRORS = (urllib3.exceptions.HTTPError, OSError)


class DownloadError(Exception):
    """A failed download; `retryable` says whether a later attempt may succeed."""

    def __init__(self, reason: str, *, retryable: bool) -> None:
        super().__init__(reason)
        self.reason, self.retryable = reason, retryable


class DownloadAborted(Exception):
    """The worker asked this download to stop (shutdown, lost slot or lease)."""


@dataclass(frozen=True)
class Limits:
    allowed_hosts: frozenset[str]
    allow_http: bool = False
    max_bytes: int = 200 * 1024 * 1024
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    total_timeout: float = 600.0


def host_allowed(url: str, limits: Limits) -> bool:
    """True when `url` is http(s) to an allowed host (``name`` or ``name:port``)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return False
    if parts.scheme == "http" and not limits.allow_http:
        return False
    if parts.username or parts.password:
        return False
    host = parts.hostname.lower()
    return host in limits.allowed_hosts or (
        port is not None and f"{host}:{port}" in limits.allowed_hosts
    )


def fetch(
    url: str,
    dest: Path,
    *,
    tmp: Path,
    auth: tuple[str, str] | None,
    limits: Limits,
    abort: threading.Event | None = None,
    http: HttpClient | None = None,
    on_progress: Callable[[int], None] | None = None,
    on_received: Callable[[], None] | None = None,
) -> int:
    """Download `url` to `dest` through the temporary file `tmp`; return the size in bytes.

    Raises DownloadError (retryable for timeouts, connection errors, 5xx, 404 and 429, and an
    incomplete body) or DownloadAborted when `abort` is set. The body must arrive within what
    is left of ``limits.total_timeout`` (the watchdog shuts the socket down at that instant).
    `on_received` is called once the whole body is in and checked, before the file is synced
    and renamed: the transfer is over, what bounds concurrent transfers can be freed.
    """
    http = http or HttpClient()
    started = time.monotonic()
    resp = _get(http, url, auth, limits)
    watch = None
    sock = response_socket(resp)
    if sock is not None:
        watch = WATCHDOG.watch(sock, max(limits.total_timeout - (time.monotonic() - started), 0))
    try:
        expected = _expected_size(resp, limits)
        size = 0
        with _create(tmp) as fh:
            try:
                for chunk in resp.stream(CHUNK):
                    if time.monotonic() - started > limits.total_timeout:
                        raise DownloadError("download deadline exceeded", retryable=True)
                    size += len(chunk)
                    if size > limits.max_bytes:
                        raise DownloadError(
                            f"recording larger than {limits.max_bytes} bytes", retryable=False
                        )
                    fh.write(chunk)
                    if on_progress is not None:
                        on_progress(size)
                    if abort is not None and abort.is_set():
                        raise DownloadAborted()
            except TRANSPORT_ERRORS as exc:
                if watch is not None and watch.fired:
                    raise DownloadError("download deadline exceeded", retryable=True) from None
                raise _transport_error(exc) from None
            if watch is not None and watch.fired:
                raise DownloadError("download deadline exceeded", retryable=True)
            if expected is not None and size != expected:
                raise DownloadError(f"incomplete body: {size} of {expected} bytes", retryable=True)
            if size == 0:
                raise DownloadError("empty body", retryable=True)
            if on_received is not None:
                on_received()
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.replace(tmp, dest)
        except FileNotFoundError:  # the business's first recording: make its directory
            make_dirs(dest.parent)
            os.replace(tmp, dest)
        return size
    finally:
        if watch is not None:
            watch.cancel()
        _done_with(resp)
        tmp.unlink(missing_ok=True)


#: recordings are private to the service's user and group, whatever the process umask
FILE_MODE, DIR_MODE = 0o640, 0o750


def make_dirs(path: Path) -> None:
    """Create `path` and any missing parent, each 0750 (set explicitly: umask only narrows)."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(d, DIR_MODE)


def _open_private(path: Path):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    os.fchmod(fd, FILE_MODE)  # the umask may have narrowed it, or a loose one widened nothing
    return os.fdopen(fd, "wb")


def _create(path: Path):
    """Open `path` for writing (0640), making its directory only when missing (no mkdir per
    file)."""
    try:
        return _open_private(path)
    except FileNotFoundError:
        make_dirs(path.parent)
        return _open_private(path)


@lru_cache(maxsize=16)
def _basic_auth(auth: tuple[str, str]) -> str:
    return "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()


def _done_with(resp: urllib3.BaseHTTPResponse) -> None:
    """Return the connection to the pool if the body was read to its end, else close it (what
    is left of a body must not be read as the next response)."""
    if not resp.closed:  # stopped before the end of the body
        resp.close()
    resp.release_conn()


def _get(http: HttpClient, url: str, auth: tuple[str, str] | None, limits: Limits):
    """GET following at most MAX_REDIRECTS redirects, each to an allowed host. Credentials go
    only to the host of the original URL."""
    origin = urlsplit(url).netloc.lower()
    for _ in range(MAX_REDIRECTS + 1):
        if not host_allowed(url, limits):
            raise DownloadError(f"host not allowed: {urlsplit(url).netloc}", retryable=False)
        headers = {"Accept-Encoding": "identity"}
        if auth is not None and urlsplit(url).netloc.lower() == origin:
            headers["Authorization"] = _basic_auth(auth)
        try:
            resp = http.get(
                url,
                headers=headers,
                connect_timeout=limits.connect_timeout,
                read_timeout=limits.read_timeout,
            )
        except TRANSPORT_ERRORS as exc:
            raise _transport_error(exc) from None
        code = resp.status
        if code in REDIRECT_STATUS and resp.headers.get("Location"):
            url = urljoin(url, resp.headers["Location"])
            _done_with(resp)
            continue
        if code == 200:
            return resp
        _done_with(resp)
        retryable = code >= 500 or code in RETRYABLE_STATUS
        raise DownloadError(f"HTTP {code}", retryable=retryable)
    raise DownloadError("too many redirects", retryable=False)


def _expected_size(resp: urllib3.BaseHTTPResponse, limits: Limits) -> int | None:
    raw = resp.headers.get("Content-Length")
    if raw is None:
        return None
    try:
        expected = int(raw)
    except ValueError:
        raise DownloadError(f"bad Content-Length {raw!r}", retryable=True) from None
    if expected > limits.max_bytes:
        raise DownloadError(
            f"recording of {expected} bytes exceeds the {limits.max_bytes} byte cap",
            retryable=False,
        )
    return expected


def _transport_error(exc: Exception) -> DownloadError:
    # urllib3's NewConnectionError (refused, unreachable) and NameResolutionError (DNS)
    # subclass its ConnectTimeoutError: name the real cause before looking for a timeout
    if isinstance(exc, urllib3.exceptions.NameResolutionError):
        return DownloadError(f"dns: cannot resolve {exc.conn.host}", retryable=True)
    if isinstance(exc, urllib3.exceptions.NewConnectionError) and not _timed_out(exc):
        return DownloadError(f"connection failed: {_cause(exc)}", retryable=True)
    # a read timeout while streaming the body may surface as a ProtocolError or an OSError
    if isinstance(exc, (urllib3.exceptions.TimeoutError, TimeoutError)) or "timed out" in str(exc):
        return DownloadError(f"timeout: {type(exc).__name__}", retryable=True)
    return DownloadError(f"{type(exc).__name__}: {exc}".splitlines()[0][:300], retryable=True)


def _timed_out(exc: Exception) -> bool:
    return "timed out" in str(exc) or isinstance(exc.__cause__, TimeoutError)


def _cause(exc: Exception) -> str:
    """``ConnectionRefusedError: [Errno 111] Connection refused``: the socket's own error."""
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, OSError):
        return f"{type(cause).__name__}: {cause.strerror or cause}"[:300]
    return str(exc).splitlines()[0][:300]
