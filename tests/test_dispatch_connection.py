"""The worker's kept driver connection: outcomes are written through it, and a connection the
server dropped between two jobs is replaced without losing the next job."""

from __future__ import annotations

import threading

from sqlalchemy import text

from prosaas_core.jobs.dispatch import Dispatcher
from prosaas_core.jobs.enqueue import enqueue
from prosaas_core.models import BackgroundJob


def _row(runtime, job_id: int) -> BackgroundJob:
    with runtime.session() as s:
        row = s.get(BackgroundJob, job_id)
        s.expunge(row)
        return row


def test_kept_connection_survives_a_dropped_backend(runtime, business):
    disp = Dispatcher(runtime, "test-worker", threading.Event())
    try:
        first = enqueue(runtime, "acme_echo", business, {"message": "one"})
        assert disp.run(first.id) == {"echo": "one", "attempt": 1}
        row = _row(runtime, first.id)
        assert (row.status, row.result, row.attempts, row.fence) == (
            "succeeded",
            {"echo": "one", "attempt": 1},
            1,
            1,
        )
        pid = disp._raw.dbapi_connection.get_backend_pid()
        with runtime.engine.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        second = enqueue(runtime, "acme_echo", business, {"message": "two"})
        assert disp.run(second.id) == {"echo": "two", "attempt": 1}
        assert _row(runtime, second.id).status == "succeeded"
        assert disp._raw.dbapi_connection.get_backend_pid() != pid
        assert disp.run(second.id) is None  # a duplicate delivery is not claimable
    finally:
        disp.stop()
