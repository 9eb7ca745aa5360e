"""Engines and sessions. One engine per process: a forked child must call ``dispose_after_fork``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def normalize_url(url: str) -> str:
    """Pin plain ``postgresql://`` (and Heroku-style ``postgres://``) URLs to psycopg2."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg2://" + url[len("postgresql://") :]
    return url


def make_engine(url: str, *, application_name: str = "prosaas", **kwargs) -> Engine:
    """An engine for `url`, tuned for the dialect (SQLite: WAL and foreign keys on)."""
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
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, connect_args=connect_args, **kwargs)


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
