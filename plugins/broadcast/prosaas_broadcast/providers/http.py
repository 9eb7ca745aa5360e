"""The HTTP client the built-in providers share (urllib3, no automatic retries: the sender
decides), and the mapping of an HTTP answer to the provider errors."""

from __future__ import annotations

import urllib3

from prosaas_broadcast.providers import (
    PermanentError,
    RateLimited,
    TransientError,
    UncertainError,
)

MAX_ERROR = 500  # characters of a provider's error body kept on the recipient


def pool(timeout: float, maxsize: int = 32) -> urllib3.PoolManager:
    return urllib3.PoolManager(
        num_pools=8,
        maxsize=maxsize,
        retries=False,
        timeout=urllib3.Timeout(connect=min(timeout, 5.0), read=timeout),
    )


def retry_after(value: str | None, default: float = 1.0) -> float:
    """Seconds from a ``Retry-After`` header (delta seconds; an HTTP date is not worth
    parsing here: it falls back to `default`), capped at an hour."""
    try:
        return min(3600.0, max(0.0, float(value))) if value else default
    except ValueError:
        return default


def request(http: urllib3.PoolManager, method: str, url: str, **kw) -> urllib3.BaseHTTPResponse:
    """One request; connection errors become TransientError (nothing reached the provider)
    or UncertainError (the request may have been taken)."""
    try:
        return http.request(method, url, **kw)
    except urllib3.exceptions.ConnectTimeoutError as exc:
        raise TransientError(f"connect timeout: {exc}") from None
    except urllib3.exceptions.NewConnectionError as exc:
        raise TransientError(f"connection refused: {exc}") from None
    except (urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.ProtocolError) as exc:
        raise UncertainError(f"no answer: {type(exc).__name__}") from None
    except urllib3.exceptions.HTTPError as exc:
        raise UncertainError(f"HTTP error: {type(exc).__name__}: {exc}") from None


def raise_for(resp: urllib3.BaseHTTPResponse, what: str) -> None:
    """Raise the error an unsuccessful answer means; nothing for a 2xx."""
    status = resp.status
    if 200 <= status < 300:
        return
    body = resp.data[:MAX_ERROR].decode("utf-8", "replace")
    if status == 429:
        raise RateLimited(f"{what}: 429 {body}", retry_after(resp.headers.get("Retry-After")))
    if status >= 500 or status == 408:
        raise TransientError(f"{what}: {status} {body}", code=str(status))
    raise PermanentError(f"{what}: {status} {body}", code=str(status))
