"""Named SQL and the one connection wrapper the core and plugins run it through (public).

Each operation on a table is one named SQL text in a ``.sql`` file (the way procrastinate keeps
its queries), loaded once with `Queries.load`::

    -- claim_job --
    -- Move a queued, due row to running (the comment lines after the name describe it).
    UPDATE background_jobs SET status = 'running' ... WHERE id = %(id)s ... RETURNING ...

Parameters are ``%(name)s``; they are rewritten to SQLite's ``:name`` when the file is loaded.
Where PostgreSQL and SQLite must differ, and only there, a query carries a dialect variant:

* a line ending in ``--@postgresql`` (or ``--@sqlite``) exists only on that dialect (a lock
  clause, a function with another name);
* a whole query named ``name@sqlite`` replaces ``name`` on SQLite (a data-modifying CTE, which
  SQLite lacks, becomes its statements in a row, separated by a ``;`` at the end of a line, run
  as one transaction).

`Db` runs a named query on a bare DB-API connection: no statement is built, compiled or
cache-keyed per call (on a hot path that was a third of a trivial job's worker time). It adapts
what the two drivers take differently (parameter style, datetimes on SQLite) and turns driver
errors into SQLAlchemy's exceptions of the same kind (``IntegrityError``, ``OperationalError``
...), with ``connection_invalidated`` set and the connection dropped when it was lost.
Results are plain tuples; a query returns JSON columns as text (``CAST(col AS TEXT)``) and
the caller decodes them with `loads`, so both databases answer alike.

`JobContext.db()` and `ServiceContext.db()` hand one out; `Db.of` wraps what a caller already
holds (a SQLAlchemy ``Connection`` or ``Session``, or a DB-API cursor). The core's tables a
plugin may read and write are `calls` and `businesses`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any, Union

from sqlalchemy import Connection, Engine, Table
from sqlalchemy.engine.interfaces import DBAPIConnection, DBAPICursor, Dialect
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.orm import Session

from prosaas_core.models import Business, Call

__all__ = [
    "Db",
    "Handle",
    "Params",
    "Queries",
    "Query",
    "Row",
    "businesses",
    "calls",
    "connect",
    "loads",
    "set_autocommit",
    "utcnow",
]

#: the core's ``calls`` table (core domain, including a call's recording reference)
calls: Table = Call.__table__
#: the core's ``businesses`` table
businesses: Table = Business.__table__

DIALECTS = ("postgresql", "sqlite")
Row = tuple[Any, ...]
Params = Mapping[str, Any]
#: what `Db.of` wraps
Handle = Union["Db", Connection, Session, DBAPICursor]


def utcnow() -> datetime:
    return datetime.now(UTC)


def loads(value: str | None) -> Any:
    """A JSON column returned as text (``CAST(col AS TEXT)``), decoded; None stays None."""
    return None if value is None else json.loads(value)


@dataclass(frozen=True, slots=True)
class Query:
    """One named SQL text: per dialect, the statements it runs (one, except where a SQLite
    variant spells a PostgreSQL CTE as several)."""

    name: str
    sql: Mapping[str, tuple[str, ...]]

    @classmethod
    def of(cls, name: str, text: str) -> Query:
        """A query from one SQL text (the same dialect lines as in a ``.sql`` file), for SQL
        a module builds from parts instead of keeping it in a file."""
        return cls(name, {d: _for(d, text) for d in DIALECTS})


_HEADER = re.compile(r"^--\s*([A-Za-z_]\w*)(?:@(\w+))?\s*--\s*$")
_ONLY = re.compile(r"\s*--@(\w+)\s*$")
_PARAM = re.compile(r"%\((\w+)\)s")
#: SQLSTATEs of an EXECUTE whose prepared statement is gone, or whose plan a change of the
#: table's column types invalidated ("cached plan must not change result type")
UNDEFINED_STATEMENT, CACHED_PLAN_CHANGED = "26000", "0A000"
#: SQLSTATE of a PREPARE whose name the session holds already
DUPLICATE_STATEMENT = "42P05"


def _for(dialect: str, text: str) -> tuple[str, ...]:
    lines = []
    for line in text.splitlines():
        only = _ONLY.search(line)
        if only is not None:
            if only.group(1) not in DIALECTS:
                raise ValueError(f"unknown dialect marker {only.group(0).strip()!r}")
            if only.group(1) != dialect:
                continue
            line = line[: only.start()]
        if not line.lstrip().startswith("--"):
            lines.append(line)
    body = "\n".join(lines)
    if dialect == "sqlite":
        body = _PARAM.sub(r":\1", body).replace("%%", "%")
    parts = tuple(s.strip() for s in re.split(r";\s*$", body, flags=re.M) if s.strip())
    return parts


class Queries:
    """The named queries of one ``.sql`` file: ``queries.claim_job`` is a `Query`."""

    def __init__(self, queries: Mapping[str, Query]) -> None:
        self._queries = dict(queries)

    @classmethod
    def load(cls, path: str | Path) -> Queries:
        """Parse `path`: a query starts at its ``-- name --`` line and runs to the next one."""
        texts: dict[tuple[str, str | None], list[str]] = {}
        current: list[str] | None = None
        for line in Path(path).read_text().splitlines():
            head = _HEADER.match(line)
            if head is not None:
                name, dialect = head.group(1), head.group(2)
                if dialect is not None and dialect not in DIALECTS:
                    raise ValueError(f"{path}: unknown dialect in {line!r}")
                if (name, dialect) in texts:
                    raise ValueError(f"{path}: query {name!r} defined twice")
                current = texts[(name, dialect)] = []
            elif current is not None:
                current.append(line)
        queries = {}
        for (name, dialect), lines in texts.items():
            if dialect is not None:
                continue
            text = "\n".join(lines)
            sql = {}
            for d in DIALECTS:
                variant = texts.get((name, d))
                sql[d] = _for(d, "\n".join(variant) if variant is not None else text)
            queries[name] = Query(name, sql)
        orphans = {n for n, d in texts if d is not None} - set(queries)
        if orphans:
            raise ValueError(f"{path}: dialect variants without a query: {sorted(orphans)}")
        return cls(queries)

    def __getattr__(self, name: str) -> Query:
        try:
            return self._queries[name]
        except KeyError:
            raise AttributeError(f"no query named {name!r}") from None

    def __iter__(self) -> Iterator[Query]:
        return iter(self._queries.values())


@cache
def _default_dialect(name: str) -> Dialect:
    """A dialect for a bare cursor handed in without an engine (its error classes and
    disconnect test are all `Db` needs)."""
    from sqlalchemy.dialects.postgresql.psycopg2 import PGDialect_psycopg2
    from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite

    cls: type[Dialect] = SQLiteDialect_pysqlite if name == "sqlite" else PGDialect_psycopg2
    return cls(dbapi=cls.import_dbapi())  # type: ignore[call-arg]


def _sqlite_value(value: Any) -> Any:
    # the text SQLAlchemy's DateTime stores on SQLite, so rows written either way compare alike
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


class Db:
    """One DB-API connection, and the named queries run on it.

    Each `Query` is atomic: one statement, or (a SQLite variant) its statements in one
    transaction. On a connection in autocommit mode each query commits on its own; inside a
    caller's transaction (`Db.of` a ``Session``) it commits with that transaction."""

    __slots__ = (
        "dialect",
        "name",
        "_conn",
        "_cursor",
        "_on_lost",
        "_sqlite",
        "_error",
        "_prepare",
        "_prepared",
    )

    def __init__(
        self,
        connection: DBAPIConnection,
        dialect: Dialect,
        *,
        cursor: DBAPICursor | None = None,
        on_lost: Callable[[BaseException], None] | None = None,
        prepare: Collection[Query] = (),
    ) -> None:
        """`prepare`: queries (these objects, not others of the same name) to run as
        server-side prepared statements on this connection (psycopg2 on PostgreSQL, in a
        session of its own: never through a transaction pooler)."""
        self.dialect = dialect
        #: ``postgresql`` or ``sqlite``
        self.name: str = dialect.name
        self._conn = connection
        self._cursor = cursor
        self._on_lost = on_lost
        self._sqlite = dialect.name == "sqlite"
        self._error: type[Exception] = dialect.loaded_dbapi.Error
        #: id(query) -> its statement's name, which carries a digest of its text
        self._prepare: dict[int, str] = (
            {id(q): _statement_name(q) for q in prepare} if dialect.driver == "psycopg2" else {}
        )
        #: the statements this connection's session has prepared
        self._prepared: set[str] = set()

    @classmethod
    def of(cls, handle: Handle) -> Db:
        """A `Db` on what the caller holds: itself; a SQLAlchemy ``Connection`` or
        ``Session`` (statements join its transaction; one is begun, as SQLAlchemy would, when
        none is open); a DB-API cursor (PostgreSQL or SQLite)."""
        if isinstance(handle, Db):
            return handle
        if isinstance(handle, Session):
            handle = handle.connection()
        if isinstance(handle, Connection):
            if not handle.in_transaction():
                handle.begin()
            conn = handle
            return cls(
                handle.connection.dbapi_connection,  # type: ignore[arg-type]
                handle.dialect,
                on_lost=lambda err: conn.invalidate(err),
            )
        sqlite = type(handle).__module__.startswith("sqlite3")
        dialect = _default_dialect("sqlite" if sqlite else "postgresql")
        return cls(handle.connection, dialect, cursor=handle)

    # -- running a query --------------------------------------------------------------------

    def rows(self, query: Query, params: Params) -> list[Row]:
        """Every row the query returns (RETURNING or SELECT)."""
        return self._run(query, params)[0]

    def one(self, query: Query, params: Params) -> Row | None:
        """The first row, or None."""
        rows = self._run(query, params)[0]
        return rows[0] if rows else None

    def scalar(self, query: Query, params: Params) -> Any:
        """The first column of the first row, or None."""
        rows = self._run(query, params)[0]
        return rows[0][0] if rows else None

    def count(self, query: Query, params: Params) -> int:
        """How many rows the (last) statement changed."""
        return self._run(query, params)[1]

    def _run(self, query: Query, params: Params) -> tuple[list[Row], int]:
        statements = query.sql[self.name]
        if self._sqlite:
            params = {k: _sqlite_value(v) for k, v in params.items()}
        cur = self._cursor if self._cursor is not None else self._conn.cursor()
        try:
            statement = self._prepare.get(id(query)) if self._prepare else None
            if statement is not None and len(statements) == 1:
                return self._run_prepared(cur, statement, statements[0], params)
            if len(statements) == 1:
                return _execute(cur, statements[0], params)
            return self._atomically(cur, statements, params)
        except self._error as err:
            raise self._translate(err, cur) from err
        finally:
            if cur is not self._cursor:
                cur.close()

    def _run_prepared(
        self, cur: DBAPICursor, statement: str, sql: str, params: Params
    ) -> tuple[list[Row], int]:
        """EXECUTE the query prepared on this session (PREPAREd on first use): PostgreSQL
        parses and plans it once per connection instead of at every call."""
        body, order = _positional(sql)
        execute = f"EXECUTE {statement} ({', '.join(f'%({p})s' for p in order)})"
        if statement not in self._prepared:
            try:
                cur.execute(f"PREPARE {statement} AS {body}")
            except self._error as err:
                # prepared by an earlier user of this pooled connection: the name's digest
                # says it is the same text
                if getattr(err, "pgcode", None) != DUPLICATE_STATEMENT:
                    raise
            self._prepared.add(statement)
        try:
            return _execute(cur, execute, params)
        except self._error as err:
            # gone (DEALLOCATE ALL, a DISCARD), or planned before a migration changed a column
            # type: prepare it afresh, once (autocommit: the failed EXECUTE changed nothing)
            code = getattr(err, "pgcode", None)
            if code not in (UNDEFINED_STATEMENT, CACHED_PLAN_CHANGED):
                raise
        if code == CACHED_PLAN_CHANGED:
            cur.execute(f"DEALLOCATE {statement}")
        cur.execute(f"PREPARE {statement} AS {body}")
        return _execute(cur, execute, params)

    def deallocate(self) -> None:
        """Drop the statements this connection prepared (before it goes back to the pool)."""
        if self._prepared:
            (self._cursor or self._conn.cursor()).execute("DEALLOCATE ALL")
            self._prepared.clear()

    def _atomically(
        self, cur: DBAPICursor, statements: tuple[str, ...], params: Params
    ) -> tuple[list[Row], int]:
        """A SQLite variant's statements, answered by the last: in the caller's transaction,
        or in one of their own on an autocommit connection."""
        own = self._sqlite and getattr(self._conn, "isolation_level", "") is None
        if own:
            cur.execute("BEGIN IMMEDIATE")
        try:
            for sql in statements:
                answer = _execute(cur, sql, params)
        except BaseException:
            if own:
                try:
                    cur.execute("ROLLBACK")
                except self._error:  # the connection is gone: nothing to roll back
                    pass
            raise
        if own:
            cur.execute("COMMIT")
        return answer

    def _translate(self, err: Exception, cur: DBAPICursor) -> StatementError:
        lost = self.dialect.is_disconnect(err, self._conn, cur)  # type: ignore[arg-type]
        if lost and self._on_lost is not None:
            self._on_lost(err)
        return DBAPIError.instance(None, None, err, self._error, connection_invalidated=lost)


def _statement_name(query: Query) -> str:
    """``prosaas_<name>_<digest of its PostgreSQL text>``: two texts never share a name."""
    digest = hashlib.sha1("\n".join(query.sql["postgresql"]).encode()).hexdigest()[:8]
    return f"prosaas_{query.name}_{digest}"


@cache
def _positional(sql: str) -> tuple[str, tuple[str, ...]]:
    """A query's text for PREPARE (``$1`` ... for its ``%(name)s`` parameters, in the order they
    first appear) and the parameter names in that order."""
    order: list[str] = []

    def number(m: re.Match[str]) -> str:
        if m.group(1) not in order:
            order.append(m.group(1))
        return f"${order.index(m.group(1)) + 1}"

    return _PARAM.sub(number, sql).replace("%%", "%"), tuple(order)


def _execute(cur: DBAPICursor, sql: str, params: Params) -> tuple[list[Row], int]:
    cur.execute(sql, params)
    # fetch everything: a SQLite statement with RETURNING ends (and commits) once its rows
    # are read
    rows = list(cur.fetchall()) if cur.description is not None else []
    return rows, cur.rowcount


def set_autocommit(connection: DBAPIConnection, dialect: Dialect, on: bool) -> None:
    """Switch a bare driver connection's autocommit mode (each statement commits on its own).
    SQLAlchemy's ``isolation_level="AUTOCOMMIT"`` does the same but costs psycopg2 a server
    round trip per checkout."""
    conn: Any = connection
    if dialect.name == "sqlite":
        conn.isolation_level = None if on else ""
    elif not conn.closed:
        conn.autocommit = on


@contextmanager
def connect(engine: Engine) -> Iterator[Db]:
    """A `Db` on a pooled connection in autocommit mode: each query commits on its own, no
    BEGIN/COMMIT round trips. A lost connection is invalidated, not returned to the pool."""
    raw = engine.raw_connection()
    dbapi_conn = raw.dbapi_connection
    assert dbapi_conn is not None
    lost = False

    def on_lost(err: BaseException) -> None:
        nonlocal lost
        lost = True
        raw.invalidate(err)

    try:
        set_autocommit(dbapi_conn, engine.dialect, True)
        yield Db(dbapi_conn, engine.dialect, on_lost=on_lost)
    finally:
        if not lost:
            set_autocommit(dbapi_conn, engine.dialect, False)
        raw.close()
