"""The one place Redis clients are made: a plain ``REDIS_URL`` server, or the master that Redis
Sentinel names.

With ``REDIS_SENTINELS=host:port,...`` and ``REDIS_SENTINEL_MASTER=name`` every client (the RQ
transport, the push client, the limiter, the delayed set, the flow waker, services and the API)
asks the sentinels for the current master whenever it opens a connection. After a failover the
old master's connections fail (refused, reset, or ``READONLY`` once it comes back as a replica);
redis-py's sentinel pool then drops them and the next command connects to the promoted replica,
so a client is back within its own retry (the worker's loops retry every 0.2-0.5 s).

``REDIS_URL`` still gives the database number, user name and password of the master (its host
and port are not used then); ``REDIS_PASSWORD`` overrides the URL's password and
``REDIS_SENTINEL_PASSWORD`` is the sentinels' own (``requirepass`` in sentinel.conf).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from prosaas_core.errors import ConfigError

if TYPE_CHECKING:
    import redis

    from prosaas_core.settings import Settings


def parse_sentinels(value: str | None) -> tuple[tuple[str, int], ...]:
    """``host:port,host:port`` -> ((host, port), ...); a bad entry is a ConfigError."""
    out = []
    for item in (value or "").split(","):
        item = item.strip()
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ConfigError(f"REDIS_SENTINELS entries must be host:port, got {item!r}")
        out.append((host.strip("[]"), int(port)))
    return tuple(out)


@dataclass(frozen=True)
class Topology:
    """What ``prosaas doctor`` reports about Redis."""

    mode: str  # "direct" or "sentinel"
    #: the role of the server the clients write to ("master"; "slave" is a misconfiguration)
    role: str
    master: str | None
    replicas: list[str]
    sentinels: list[str]


def _url_kwargs(url: str) -> dict[str, Any]:
    """db, username and password of REDIS_URL (used for the master Sentinel names)."""
    parts = urlsplit(url)
    kw: dict[str, Any] = {}
    path = parts.path.lstrip("/")
    if path.isdigit():
        kw["db"] = int(path)
    if parts.username:
        kw["username"] = unquote(parts.username)
    if parts.password:
        kw["password"] = unquote(parts.password)
    if parts.scheme == "rediss":
        kw["ssl"] = True
    return kw


def make_redis(
    settings: Settings, *, socket_timeout: float = 10.0, socket_connect_timeout: float = 2.0
) -> redis.Redis:
    """A client on the Redis master: REDIS_URL, or the master the sentinels name."""
    import redis as redis_lib

    if not settings.redis_sentinels:
        kw: dict[str, Any] = {}
        if settings.redis_password:
            kw["password"] = settings.redis_password
        return redis_lib.Redis.from_url(
            settings.redis_url,
            socket_connect_timeout=socket_connect_timeout,
            socket_timeout=socket_timeout,
            **kw,
        )
    return _sentinel(settings, socket_connect_timeout).master_for(
        settings.redis_sentinel_master,
        redis_class=redis_lib.Redis,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_connect_timeout,
        **_master_kwargs(settings),
    )


def _master_kwargs(settings: Settings) -> dict[str, Any]:
    kw = _url_kwargs(settings.redis_url)
    if settings.redis_password:
        kw["password"] = settings.redis_password
    return kw


def _sentinel(settings: Settings, timeout: float) -> Any:
    from redis.backoff import NoBackoff
    from redis.retry import Retry
    from redis.sentinel import Sentinel

    sentinel_kwargs: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        # one try per sentinel, the next sentinel being the retry: redis-py's default retries
        # a hung sentinel 10 times with backoff (about 15 s at a 1 s timeout, not one timeout)
        "retry": Retry(NoBackoff(), 0),
    }
    if settings.redis_sentinel_password:
        sentinel_kwargs["password"] = settings.redis_sentinel_password
    return Sentinel(list(settings.redis_sentinels), sentinel_kwargs=sentinel_kwargs)


def describe(settings: Settings) -> str:
    """Where Redis is, for log lines and errors (no password)."""
    from prosaas_core.urls import mask_url

    if not settings.redis_sentinels:
        return mask_url(settings.redis_url)
    hosts = ",".join(f"{h}:{p}" for h, p in settings.redis_sentinels)
    return f"sentinel master {settings.redis_sentinel_master!r} via {hosts}"


def topology(settings: Settings, client: Any) -> Topology:
    """The master and its replicas (from ``INFO replication`` of the master, and with Sentinel
    from the sentinels' view as well)."""
    info = client.info("replication")
    replicas = []
    for key, value in info.items():
        if key.startswith("slave") and isinstance(value, dict):
            replicas.append(f"{value.get('ip')}:{value.get('port')} ({value.get('state')})")
    role = str(info.get("role", "?"))
    if not settings.redis_sentinels:
        return Topology("direct", role, describe(settings), replicas, [])
    sentinel = _sentinel(settings, 2.0)
    host, port = sentinel.discover_master(settings.redis_sentinel_master)
    answering = []
    for s in sentinel.sentinels:
        try:
            s.ping()
        except Exception:  # a sentinel down is worth reporting, not a crash
            continue
        kw = s.connection_pool.connection_kwargs
        answering.append(f"{kw['host']}:{kw['port']}")
    return Topology("sentinel", role, f"{host}:{port}", replicas, answering)
