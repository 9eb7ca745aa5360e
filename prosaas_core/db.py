"""Engines and sessions. One engine per process: a forked child must call ``dispose_after_fork``."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, exc
from sqlalchemy.engine.interfaces import DBAPICursor
from sqlalchemy.orm import Session, sessionmaker

#: A pooled connection idle at least this long is pinged before it is handed out again.
PING_IDLE_SECONDS = 1.0

#: libpq parameters of every PostgreSQL connection unless ``DATABASE_URL`` sets them (none when
#: it names a libpq service, or ``PGSERVICE`` is set: the service file's values then hold): a
#: server that accepts and never answers (hung, or its host black-holed) fails a connect in 10 s
#: per address instead of never (libpq has no timeout of its own), and a peer that vanished is
#: noticed within about a minute, whether the connection was idle or waiting for an answer
#: (keepalives: 30 s idle + 3 probes 10 s apart) or had data unacknowledged (tcp_user_timeout,
#: 60 s; without it the kernel retransmits for about 15 minutes).
PG_CONNECT_DEFAULTS: dict[str, int] = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 60_000,
}


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def normalize_url(url: str) -> str:
    """Pin plain ``postgresql://`` (and Heroku-style ``postgres://``) URLs to psycopg2."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg2://" + url[len("postgresql://") :]
    return url


def make_engine(
    url: str,
    *,
    application_name: str = "prosaas",
    ping_idle_seconds: float | None = PING_IDLE_SECONDS,
    **kwargs,
) -> Engine:
    """An engine for `url`, tuned for the dialect (SQLite: WAL and foreign keys on).

    PostgreSQL connections are pinged on checkout only when they sat idle in the pool for
    `ping_idle_seconds` or more (see `_ping_when_idle`); pass ``pool_pre_ping=True`` to ping on
    every checkout instead, or ``ping_idle_seconds=None`` for no ping at all."""
    url = normalize_url(url)
    if is_sqlite(url):
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    connect_args = kwargs.pop("connect_args", {})
    connect_args.setdefault("application_name", application_name)
    for name, value in _libpq_defaults(url).items():
        connect_args.setdefault(name, value)
    engine = create_engine(url, connect_args=connect_args, **kwargs)
    if ping_idle_seconds is not None and not kwargs.get("pool_pre_ping"):
        _ping_when_idle(engine, ping_idle_seconds)
    if engine.dialect.driver == "psycopg2" and "isolation_level" not in kwargs:
        _keep_default_isolation(engine)  # an engine-wide level is the caller's: kept
    return engine


def _libpq_defaults(url: str) -> dict[str, int]:
    """`PG_CONNECT_DEFAULTS` less what the URL's query (or ``PGCONNECT_TIMEOUT``, 0 included:
    libpq's "wait for ever") already sets; nothing with a libpq service (its file's values
    would be overridden) or for a driver that is not libpq's."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql" or parsed.get_driver_name() not in (
        "psycopg2",
        "psycopg",
    ):
        return {}
    given = set(parsed.query)
    if "service" in given or os.environ.get("PGSERVICE"):
        return {}
    if os.environ.get("PGCONNECT_TIMEOUT"):
        given.add("connect_timeout")
    if _libpq_version(parsed.get_driver_name()) < 120000:  # libpq 11 and older refuse the name
        given.add("tcp_user_timeout")
    return {k: v for k, v in PG_CONNECT_DEFAULTS.items() if k not in given}


def _libpq_version(driver: str) -> int:
    """The libpq the driver runs on, as libpq numbers it (170002: 17.2); 0 when unknown."""
    import importlib

    try:
        if driver == "psycopg2":  # the libpq loaded, not the one it was built against
            return int(importlib.import_module("psycopg2.extensions").libpq_version())
        # psycopg 3 is optional: imported by name, so type checking needs it not installed
        return int(importlib.import_module("psycopg").pq.version())
    except Exception:
        return 0


def _keep_default_isolation(engine: Engine) -> None:
    """Give back every connection at the server's default isolation level.

    A connection used with ``execution_options(isolation_level=...)`` (the history's snapshot
    reads) is reset by SQLAlchemy to the level by name, which psycopg2 then keeps as an
    explicit setting: from then on every switch out of autocommit (`autocommit`,
    `autocommit_cursor`, ``store.connect``: each checkout of the hot paths) costs a
    ``SET default_transaction_isolation TO DEFAULT`` round trip. The default is the same level
    (SQLAlchemy read it from the server), so clearing the setting changes nothing else and
    sends nothing."""

    @event.listens_for(engine.pool, "checkin")
    def _default_isolation(dbapi_conn, _record) -> None:
        if (
            dbapi_conn is not None
            and not dbapi_conn.closed
            and not dbapi_conn.autocommit
            and dbapi_conn.isolation_level is not None
        ):
            try:
                dbapi_conn.isolation_level = None  # not in autocommit: recorded, nothing sent
            except dbapi_conn.Error:  # a transaction still open: left as it is, slot kept
                pass


def _ping_when_idle(engine: Engine, idle_seconds: float) -> None:
    """Pessimistic disconnect handling, paid only where it helps.

    SQLAlchemy's ``pool_pre_ping`` costs a ``SELECT 1`` round trip on every checkout, i.e. on
    every request. A connection that went stale (server restarted, idle timeout, failover)
    almost always did so while it sat unused, so only a connection idle for `idle_seconds` is
    pinged. A failed ping invalidates the whole pool, exactly as ``pool_pre_ping`` does, and the
    pool hands out a fresh connection instead. A connection that breaks while in busy use makes
    its statement fail (with or without a ping); SQLAlchemy then invalidates the pool too, so
    the next checkouts reconnect.
    """
    dialect = engine.dialect

    @event.listens_for(engine.pool, "checkin")
    def _checkin(_dbapi_conn, record) -> None:
        if record is not None:
            record.info["prosaas_idle_since"] = time.monotonic()

    @event.listens_for(engine.pool, "checkout")
    def _checkout(dbapi_conn, record, _proxy) -> None:
        since = record.info.get("prosaas_idle_since")  # absent on a fresh connection
        if since is None or time.monotonic() - since < idle_seconds:
            return
        try:
            dialect.do_ping(dbapi_conn)
        except dialect.loaded_dbapi.Error as err:
            if dialect.is_disconnect(err, dbapi_conn, None):
                raise exc.InvalidatePoolError(f"idle connection failed its ping: {err}") from err
            raise


@contextmanager
def autocommit(engine: Engine) -> Iterator[Connection]:
    """A pooled connection on which each statement commits on its own.

    For hot single-statement reads and writes: no ``BEGIN``/``COMMIT`` round trips. The driver's
    ``autocommit`` attribute is switched on for the block and off again before the connection
    goes back to the pool; SQLAlchemy's ``isolation_level="AUTOCOMMIT"`` option would do the
    same but costs psycopg2 a server round trip per checkout (``set_isolation_level``). On
    SQLite the block runs in one transaction instead, committed when it succeeds."""
    if engine.dialect.name == "sqlite":
        with engine.begin() as conn:
            yield conn
        return
    with engine.connect() as conn:
        dbapi_conn = conn.connection.dbapi_connection
        dbapi_conn.autocommit = True  # type: ignore[union-attr]
        try:
            yield conn
        finally:
            if not dbapi_conn.closed:  # type: ignore[union-attr]
                dbapi_conn.autocommit = False  # type: ignore[union-attr]


@contextmanager
def autocommit_cursor(engine: Engine) -> Iterator[DBAPICursor]:
    """A DBAPI cursor on a pooled PostgreSQL connection in autocommit mode.

    For driver SQL outside the named queries (the core's own statements go through
    ``prosaas_core.store.connect``, which does the same for a `Db`): it skips SQLAlchemy's
    execution and result machinery, about half the client CPU of a small statement. The caller
    writes driver SQL (psycopg2 ``%s`` parameters). A driver
    error is re-raised as SQLAlchemy's exception of the same kind (``IntegrityError``,
    ``OperationalError``...), so callers and the API's error handlers treat both paths alike;
    a lost connection is invalidated, not returned to the pool. Not for SQLite."""
    dialect = engine.dialect
    raw = engine.raw_connection()
    dbapi_conn: Any = raw.dbapi_connection
    try:
        dbapi_conn.autocommit = True
        cur = dbapi_conn.cursor()
        try:
            yield cur
        finally:
            cur.close()
    except dialect.loaded_dbapi.Error as err:
        lost = dialect.is_disconnect(err, dbapi_conn, None)
        if lost:
            raw.invalidate(err)
        raise exc.DBAPIError.instance(
            None, None, err, dialect.loaded_dbapi.Error, connection_invalidated=lost
        ) from err
    finally:
        if dbapi_conn is not None and not dbapi_conn.closed:
            dbapi_conn.autocommit = False
        raw.close()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session that commits when the block succeeds and rolls back when it raises."""
    with factory() as session:
        with session.begin():
            yield session


def dispose_after_fork(engine: Engine) -> None:
    """In a forked child, drop the parent's pooled connections without closing them."""
    engine.dispose(close=False)


def process_tag() -> str:
    """host:pid, recorded with migrations and claimed jobs."""
    return f"{os.uname().nodename}:{os.getpid()}"
