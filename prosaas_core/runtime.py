"""The runtime: settings, plugins, registry, database and Redis, built lazily and once.

Nothing here is a module-level global: the CLI, the app factory and each test build their own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING

from prosaas_core.settings import Settings

if TYPE_CHECKING:
    import redis
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

    @cached_property
    def flow(self) -> FlowControl:
        """Per-business flow control of the installed job types (``prosaas_core.jobs.flow``)."""
        from prosaas_core.jobs.flow import FlowControl

        return FlowControl(self)

    def close(self) -> None:
        """Release pooled database and Redis connections."""
        if "engine" in self.__dict__:
            self.engine.dispose()
        if "redis" in self.__dict__:
            self.redis.close()
