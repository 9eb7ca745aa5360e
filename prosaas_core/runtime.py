"""The runtime: settings, plugins, registry, database and Redis, built lazily and once.

Nothing here is a module-level global: the CLI, the app factory and each test build their own.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING

from prosaas_core.settings import Settings

if TYPE_CHECKING:
    import redis
    from redis import Redis
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from prosaas_core.jobs.flow import FlowControl
    from prosaas_core.limits import Limits
    from prosaas_core.plugins import PluginManager
    from prosaas_core.registry import Registry


class Runtime:
    """Everything a command, the app or a worker needs, for one set of settings and plugins."""

    def __init__(self, settings: Settings | None = None, pm: PluginManager | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self._pm = pm
        self._lock = threading.Lock()  # builds the request client once, under any Python

    @cached_property
    def pm(self) -> PluginManager:
        if self._pm is None:
            from prosaas_core.plugins import get_plugin_manager

            self._pm = get_plugin_manager(self.settings.disable_plugins)
        return self._pm

    @cached_property
    def registry(self) -> Registry:
        from prosaas_core.registry import load_registry

        return load_registry(self.pm)

    @cached_property
    def engine(self) -> Engine:
        from prosaas_core.db import is_sqlite, make_engine, normalize_url

        url = self.settings.database_url
        if is_sqlite(normalize_url(url)):
            return make_engine(url)
        return make_engine(
            url,
            pool_size=self.settings.db_pool_size,
            max_overflow=self.settings.db_max_overflow,
        )

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        from prosaas_core.db import make_sessionmaker

        return make_sessionmaker(self.engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in a transaction: committed on success, rolled back on error."""
        from prosaas_core.db import transaction

        with transaction(self.sessions) as session:
            yield session

    @cached_property
    def redis(self) -> redis.Redis:
        from prosaas_core.redisconn import make_redis

        return make_redis(self.settings, socket_connect_timeout=2, socket_timeout=10)

    @cached_property
    def limits(self) -> Limits:
        """Concurrency slots and rate limits on this runtime's Redis (``prosaas_core.limits``)."""
        from prosaas_core.db import process_tag
        from prosaas_core.limits import Limits

        return Limits.on(self.redis, origin=process_tag())

    @property
    def request_redis(self) -> Redis:
        """The same Redis with short timeouts (``PROSAAS_PUSH_TIMEOUT``, 1 s) for what somebody
        waits on: the push after an enqueue's commit, an API request, a dashboard page, a
        metrics scrape, an operator's command. A hung Redis fails them within the timeout
        (an API request answers 503) instead of holding each for the 10 s of `redis`, which the
        worker's own loops keep so that they ride out a slow moment (a BGSAVE fork)."""
        client = self.__dict__.get("_request_redis")
        if client is None:
            import redis as redis_lib

            from prosaas_core.redisconn import make_redis

            if type(self.redis) is not redis_lib.Redis:
                return self.redis  # a stand-in (the demo's fakeredis): used as it is
            with self._lock:
                client = self.__dict__.get("_request_redis")
                if client is None:
                    t = self.settings.push_timeout
                    client = make_redis(self.settings, socket_connect_timeout=t, socket_timeout=t)
                    self.__dict__["_request_redis"] = client
        return client

    @cached_property
    def request_limits(self) -> Limits:
        """`limits` on `request_redis`: slots and rates read or taken on a request path."""
        from prosaas_core.db import process_tag
        from prosaas_core.limits import Limits

        return Limits.on(self.request_redis, origin=process_tag())

    @cached_property
    def flow(self) -> FlowControl:
        """Per-business flow control of the installed job types (``prosaas_core.jobs.flow``)."""
        from prosaas_core.jobs.flow import FlowControl

        return FlowControl(self)

    def close(self) -> None:
        """Push what the jobs API accepted in this process (`pusher`; up to 3 s while Redis
        hangs), then release pooled database and Redis connections."""
        from prosaas_core.jobs.pusher import flush

        flush(self)
        if "engine" in self.__dict__:
            self.engine.dispose()
        for name in ("redis", "_request_redis"):
            if name in self.__dict__:
                self.__dict__[name].close()
