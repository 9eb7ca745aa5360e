"""Count database round trips of this process (psycopg2), for bench/worker_throughput.py.

``install(path)`` wraps psycopg2.connect so every statement, implicit BEGIN, COMMIT and ROLLBACK
is counted; the totals are written to `path` (JSON) a few times a second and at exit.
"""

from __future__ import annotations

import atexit
import json
import os
import threading

import psycopg2
import psycopg2.extensions as ext

COUNTS = {"round_trips": 0, "statements": 0, "begins": 0, "commits": 0, "rollbacks": 0}
COUNTS["connects"] = 0
#: what costs one network round trip to the server
ROUND_TRIPS = {"statements", "begins", "commits", "rollbacks"}
_lock = threading.Lock()


def _add(key: str) -> None:
    with _lock:
        COUNTS[key] += 1
        if key in ROUND_TRIPS:
            COUNTS["round_trips"] += 1


class CountingCursor(ext.cursor):
    def _count(self) -> None:
        conn = self.connection
        if not conn.autocommit and conn.status == ext.STATUS_READY:
            _add("begins")  # psycopg2 sends BEGIN first
        _add("statements")

    def execute(self, query, vars=None):
        self._count()
        return super().execute(query, vars)

    def executemany(self, query, vars_list):
        self._count()
        return super().executemany(query, vars_list)


class CountingConnection(ext.connection):
    def cursor(self, *args, **kwargs):
        kwargs.setdefault("cursor_factory", CountingCursor)
        return super().cursor(*args, **kwargs)

    def commit(self):
        if self.status != ext.STATUS_READY:
            _add("commits")
        return super().commit()

    def rollback(self):
        if self.status != ext.STATUS_READY:
            _add("rollbacks")
        return super().rollback()


def install(path: str) -> None:
    real = psycopg2.connect

    def connect(*args, **kwargs):
        kwargs.setdefault("connection_factory", CountingConnection)
        _add("connects")
        return real(*args, **kwargs)

    psycopg2.connect = connect

    def dump() -> None:
        with _lock:
            data = json.dumps(COUNTS)
        # written aside and renamed: the dumping thread may be stopped mid-write at exit, and a
        # truncated file must never be what the benchmark reads
        tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
        with open(tmp, "w") as f:
            f.write(data)
        os.replace(tmp, path)

    def loop() -> None:
        while True:
            dump()
            threading.Event().wait(0.2)

    threading.Thread(target=loop, daemon=True).start()
    atexit.register(dump)

    # forked work horses (RQ's Worker) leave through os._exit: each writes its own file first
    real_exit = os._exit

    def child_exit(code: int) -> None:
        with _lock:
            data = json.dumps(COUNTS)
        with open(f"{path}.{os.getpid()}", "w") as f:
            f.write(data)
        real_exit(code)

    def after_fork_in_child() -> None:
        for key in COUNTS:
            COUNTS[key] = 0
        os._exit = child_exit

    os.register_at_fork(after_in_child=after_fork_in_child)
