"""The downloader's HTTP client: urllib3 connection pools, with the environment's proxy and CA
settings as requests would apply them.

A download is one GET. requests spends about as much CPU again as the urllib3 underneath it
on every call (it re-merges settings, proxies from ``os.environ``, cookies and hooks), which
at hundreds of downloads a second is a large part of a worker's CPU, so the worker talks to
urllib3 directly. Like requests it honours ``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY`` and
``NO_PROXY`` (read once per scheme and host), and verifies TLS against ``REQUESTS_CA_BUNDLE``
or ``CURL_CA_BUNDLE`` when set, else certifi's bundle.
"""

from __future__ import annotations

import os
import urllib.request
from urllib.parse import urlsplit

import urllib3


def _ca_bundle() -> str:
    env = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if env:
        return env
    import certifi

    return certifi.where()


def env_proxy(scheme: str, host: str) -> str | None:
    """The proxy the environment sets for `scheme`://`host`, or None (direct, or NO_PROXY)."""
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(scheme) or proxies.get("all")
    # proxy_bypass_environment is public in urllib.request but missing from typeshed
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    if not proxy or bypass(host, proxies):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


class HttpClient:
    """Pooled GETs (keep-alive); use one per thread, or share it (urllib3 pools are
    thread-safe) with `maxsize` at least the number of threads."""

    def __init__(self, *, maxsize: int = 1) -> None:
        self.maxsize = maxsize
        self.ca_certs = _ca_bundle()
        self.direct = urllib3.PoolManager(maxsize=maxsize, ca_certs=self.ca_certs)
        self.proxied: dict[str, urllib3.ProxyManager] = {}
        self.routes: dict[tuple[str, str], urllib3.PoolManager] = {}

    def _manager(self, scheme: str, host: str) -> urllib3.PoolManager:
        route = self.routes.get((scheme, host))
        if route is None:
            proxy = env_proxy(scheme, host)
            if proxy is None:
                route = self.direct
            else:
                route = self.proxied.get(proxy) or self.proxied.setdefault(
                    proxy, urllib3.ProxyManager(proxy, maxsize=self.maxsize, ca_certs=self.ca_certs)
                )
            self.routes[(scheme, host)] = route
        return route

    def get(
        self, url: str, *, headers: dict[str, str], connect_timeout: float, read_timeout: float
    ) -> urllib3.BaseHTTPResponse:
        """Send a GET; the response body is not read yet (stream it, then release it).
        No redirects followed and no retries: the caller decides."""
        parts = urlsplit(url)
        return self._manager(parts.scheme, (parts.hostname or "").lower()).urlopen(
            "GET",
            url,
            headers=headers,
            redirect=False,
            retries=False,
            preload_content=False,
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
        )

    def close(self) -> None:
        self.direct.clear()
        for manager in self.proxied.values():
            manager.clear()
