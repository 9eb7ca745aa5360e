"""Which database errors a job write retries on a fresh connection, and for how long."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from prosaas_core.jobs.dbretry import retry_transient, transient


def _error(fn) -> BaseException:
    try:
        fn()
    except Exception as exc:
        return exc
    raise AssertionError("no error")


def test_unreachable_server_is_transient_and_retried_within_the_budget():
    from prosaas_core.testing import free_port

    engine = create_engine(f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/x")
    calls = []

    def connect():
        calls.append(time.monotonic())
        with engine.connect():
            pass

    assert transient(_error(connect))
    started = time.monotonic()
    with pytest.raises(DBAPIError):
        retry_transient(connect, 0.5, what="test write")
    took = time.monotonic() - started
    assert 0.3 <= took < 2.0 and len(calls) > 3
    # the driver's own error (engine.raw_connection() lets it through unwrapped) counts too
    assert transient(_error(lambda: engine.raw_connection()))


def test_refusals_and_timeouts_are_not_transient(pg_url):
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (id int PRIMARY KEY)"))
        conn.execute(text("INSERT INTO t VALUES (1)"))

    def duplicate():
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (1)"))

    def timeout():
        with engine.begin() as conn:
            conn.execute(text("SET LOCAL statement_timeout = 10"))
            conn.execute(text("SELECT pg_sleep(1)"))

    assert not transient(_error(duplicate))
    assert not transient(_error(timeout))  # a statement timeout is the statement's problem
    calls = []

    def once():
        calls.append(1)
        duplicate()

    with pytest.raises(DBAPIError):
        retry_transient(once, 5.0)
    assert len(calls) == 1  # not retried
    engine.dispose()


def test_a_terminated_backend_is_transient(pg_url):
    engine = create_engine(pg_url)
    with engine.connect() as conn:
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        with create_engine(pg_url).connect() as other:
            other.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        assert transient(_error(lambda: conn.execute(text("SELECT 1"))))
    engine.dispose()
