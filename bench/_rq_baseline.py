"""The plain-RQ baseline of bench/worker_throughput.py: the same trivial function as acme_echo,
plus one status UPDATE per job on a kept autocommit connection (what prosaas's final write is).

Imported by the worker parent before it forks (as prosaas is), with the engine initialised, so a
forked horse pays for the fork and a connect, as prosaas's does, and not for imports.
"""

from __future__ import annotations

import os

from sqlalchemy import create_engine, text

_engine = create_engine(
    os.environ["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg2://", 1)
)
_engine.connect().close()  # dialect initialised once, in the parent
_conn = None
_pid = os.getpid()


def _connection():
    global _conn, _pid
    if _conn is None or _pid != os.getpid():  # a forked horse opens its own
        if _pid != os.getpid():
            _engine.dispose(close=False)
        _conn = _engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        _pid = os.getpid()
    return _conn


def run(row_id: int, message: str) -> dict:
    result = {"echo": message, "attempt": 1}
    _connection().execute(
        text(
            "UPDATE bench_rq_jobs SET status = 'succeeded', finished_at = clock_timestamp() "
            "WHERE id = :id"
        ),
        {"id": row_id},
    )
    return result
