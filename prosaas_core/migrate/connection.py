"""The migration engine: timeouts on every PostgreSQL connection, real transactions on SQLite."""

from __future__ import annotations

import logging

from sqlalchemy import Engine, event
from sqlalchemy.pool import NullPool

from prosaas_core.db import make_engine
from prosaas_core.settings import Settings

log = logging.getLogger("prosaas.migrate")

APPLICATION_NAME = "prosaas-migrate"


def migration_engine(settings: Settings) -> Engine:
    """An engine on ``settings.migration_url`` (``DATABASE_MIGRATION_URL`` or ``DATABASE_URL``).

    PostgreSQL connections carry ``statement_timeout`` (nothing runs forever), a short
    ``lock_timeout`` (DDL waiting for its table lock makes every later writer queue behind it,
    so it gives up fast and is retried) and ``client_connection_check_interval`` (a killed
    migrator's statement is cancelled within a second). SQLite connections get real
    ``BEGIN IMMEDIATE`` transactions, so DDL is atomic there too.
    """
    engine = make_engine(
        settings.migration_url, application_name=APPLICATION_NAME, poolclass=NullPool
    )
    if engine.dialect.name == "postgresql":
        statement_ms = int(settings.migration_statement_timeout * 1000)
        lock_ms = int(settings.migration_lock_timeout_ms)

        @event.listens_for(engine, "connect")
        def _timeouts(dbapi_conn, _record) -> None:
            cur = dbapi_conn.cursor()
            cur.execute(f"SET statement_timeout = {statement_ms}")
            cur.execute(f"SET lock_timeout = {lock_ms}")
            if dbapi_conn.server_version >= 140000:  # the setting is new in PostgreSQL 14
                cur.execute("SET client_connection_check_interval = 1000")
            cur.close()
            dbapi_conn.commit()

    elif engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _own_transactions(dbapi_conn, _record) -> None:
            # pysqlite would otherwise commit before every DDL statement.
            dbapi_conn.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin(conn) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def log_timeouts(settings: Settings, engine: Engine) -> None:
    if engine.dialect.name == "postgresql":
        log.info(
            "Set statement_timeout to %gs and lock_timeout to %dms for migration connection",
            settings.migration_statement_timeout,
            settings.migration_lock_timeout_ms,
        )
