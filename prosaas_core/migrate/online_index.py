"""Index changes on busy tables that writers never wait for (PostgreSQL ``CONCURRENTLY``).

A plain ``CREATE INDEX`` holds a SHARE lock for the whole build: every INSERT and UPDATE of
the table waits until it ends. ``CREATE INDEX CONCURRENTLY`` takes SHARE UPDATE EXCLUSIVE,
which writers do not conflict with, but it cannot run inside a transaction, so a migration
runs it in Alembic's ``autocommit_block()``. Put that block first in ``upgrade()``: the
revision's transactional part comes after it, so a migrator killed after the build re-runs the
revision and finds the index already there (``IF NOT EXISTS``) instead of half a schema.

A build that fails (a lock timeout while it waits for older transactions, a cancel) leaves an
INVALID index behind; :func:`create` drops such a leftover before it builds again. On SQLite
(and in offline SQL for it) these are plain statements: there is no one to wait.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op


def _postgres() -> bool:
    return op.get_context().dialect.name == "postgresql"


def _online(conn: sa.Connection | None) -> bool:
    return conn is not None and not op.get_context().as_sql


def create(
    name: str,
    table: str,
    columns: Sequence[str],
    *,
    where: str | None = None,
    unique: bool = False,
) -> None:
    """CREATE INDEX [CONCURRENTLY] IF NOT EXISTS; call inside ``autocommit_block()`` on
    PostgreSQL (see :func:`block`)."""
    if not _postgres():
        op.create_index(
            name,
            table,
            list(columns),
            unique=unique,
            sqlite_where=sa.text(where) if where else None,
        )
        return
    ctx = op.get_context()
    conn = ctx.connection if not ctx.as_sql else None
    if _online(conn):
        assert conn is not None  # _online says so
        valid = conn.execute(
            sa.text("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:n)"),
            {"n": name},
        ).scalar()
        if valid is False:  # the leftover of a failed build: not used by queries, still written
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
    cols = ", ".join(columns)
    kind = "UNIQUE INDEX" if unique else "INDEX"
    sql = f"CREATE {kind} CONCURRENTLY IF NOT EXISTS {name} ON {table} ({cols})"
    if where:
        sql += f" WHERE {where}"
    op.execute(sql)


def drop(name: str, table: str) -> None:
    """DROP INDEX [CONCURRENTLY] IF EXISTS (inside ``autocommit_block()`` on PostgreSQL)."""
    if _postgres():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
    else:
        op.execute(f"DROP INDEX IF EXISTS {name}")


class block:
    """``with online_index.block():`` Alembic's autocommit block on PostgreSQL, where the builds
    may take long: no statement_timeout for them, and a lock_timeout as long as the statement
    timeout was (waiting for older transactions blocks no writer). Nothing on SQLite."""

    def __enter__(self) -> None:
        self._cm = None
        if not _postgres():
            return
        self._cm = op.get_context().autocommit_block()
        self._cm.__enter__()
        ctx = op.get_context()
        self._saved = None
        if not ctx.as_sql:
            conn = ctx.connection
            assert conn is not None  # not an offline (--sql) run
            st = conn.execute(sa.text("SHOW statement_timeout")).scalar()
            lk = conn.execute(sa.text("SHOW lock_timeout")).scalar()
            self._saved = (st, lk)
            conn.execute(sa.text("SET statement_timeout = 0"))
            conn.execute(sa.text(f"SET lock_timeout = '{st if st != '0' else '120s'}'"))

    def __exit__(self, *exc: Any) -> None:
        if self._cm is None:
            return
        try:
            if self._saved is not None:
                conn = op.get_context().connection
                assert conn is not None
                conn.execute(sa.text(f"SET statement_timeout = '{self._saved[0]}'"))
                conn.execute(sa.text(f"SET lock_timeout = '{self._saved[1]}'"))
        finally:
            self._cm.__exit__(*exc)
