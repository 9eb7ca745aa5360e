"""The plain-RQ baseline of bench/worker_throughput.py: the same trivial function as acme_echo,
plus one status UPDATE per job on a kept autocommit driver connection (what prosaas's final
write is: fixed SQL on a bare psycopg2 cursor, no SQLAlchemy execution machinery).

Imported by the worker parent before it forks (as prosaas is), with the engine initialised, so a
forked horse pays for the fork and a connect, as prosaas's does, and not for imports.
"""

from __future__ import annotations

import os

from sqlalchemy import create_engine

_engine = create_engine(
    os.environ["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg2://", 1)
)
_engine.connect().close()  # dialect initialised once, in the parent
_raw = None  # kept checked out of the pool for the process's life, as prosaas keeps its own
_cursor = None
_pid = os.getpid()
SQL = "UPDATE bench_rq_jobs SET status = 'succeeded', finished_at = clock_timestamp() WHERE id = %s"


def _cur():
    global _raw, _cursor, _pid
    if _cursor is None or _pid != os.getpid():  # a forked horse opens its own
        if _pid != os.getpid():
            _engine.dispose(close=False)
        _raw = _engine.raw_connection()
        _raw.dbapi_connection.autocommit = True
        _cursor = _raw.dbapi_connection.cursor()
        _pid = os.getpid()
    return _cursor


def run(row_id: int, message: str) -> dict:
    result = {"echo": message, "attempt": 1}
    _cur().execute(SQL, (row_id,))
    return result
