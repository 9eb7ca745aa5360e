"""The cross-process migration lock.

PostgreSQL: a session-level advisory lock taken with ``pg_try_advisory_lock(key)`` on a
dedicated connection, polled with jittered backoff until the configured wait runs out. Never
``pg_advisory_lock``: a blocking call hangs behind another migrator and then dies on
``statement_timeout`` (docs/architecture.md, "Why it is built this way"). The lock belongs to the
connection, so a migrator that is killed (even with SIGKILL) releases it when PostgreSQL sees the
connection close; ``client_connection_check_interval`` makes PostgreSQL notice within a second
even while a statement is running.

The key is a signed 64-bit integer derived from the database name::

    key = int.from_bytes(sha256(b"prosaas-migrate:" + current_database()).digest()[:8],
                         "big", signed=True)

so every migrator of one database contends for the same key, and prosaas never collides with
advisory keys an application picks by hand (small integers). An operator can see the holder
with ``SELECT * FROM pg_locks WHERE locktype = 'advisory'`` (``classid``/``objid`` are the high
and low 32 bits of the key). Session advisory locks do not survive a transaction-pooling
PgBouncer: point ``DATABASE_MIGRATION_URL`` at the database directly (``pooler.py`` refuses
otherwise).

SQLite: an exclusive ``flock`` on ``<database file>.migrate-lock``, polled the same way; the
kernel releases it when the process dies.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import make_url

from prosaas_core.backoff import delays, sleep_until
from prosaas_core.errors import MigrationLockTimeout

log = logging.getLogger("prosaas.migrate")

#: seconds between two "waiting for the migration lock" log lines
HOLDER_LOG_INTERVAL = 5.0


def lock_key(database_name: str) -> int:
    """The advisory lock key of `database_name` (see the module docstring)."""
    digest = hashlib.sha256(b"prosaas-migrate:" + database_name.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class MigrationLock:
    """Held across the whole migration; ``acquire`` raises MigrationLockTimeout after `wait`."""

    def acquire(self, wait: float) -> float:
        """Take the lock, waiting at most `wait` seconds; return the seconds waited."""
        start = time.monotonic()
        deadline = start + wait
        last_log = -HOLDER_LOG_INTERVAL
        for delay in delays(0.05, factor=1.6, cap=1.0, jitter=0.5):
            if self._try():
                waited = time.monotonic() - start
                log.info("Acquired migration lock (%s, waited %.1fs)", self.describe(), waited)
                return waited
            now = time.monotonic()
            if now >= deadline:
                holder = self.holder()
                raise MigrationLockTimeout(
                    f"could not acquire the migration lock within {wait:g}s: held by {holder}; "
                    f"another migrator is running (retry later, or raise --lock-wait)"
                )
            if now - last_log >= HOLDER_LOG_INTERVAL:
                last_log = now
                log.warning(
                    "Waiting for migration lock (%s) held by %s; waited %.1fs of %gs",
                    self.describe(),
                    self.holder(),
                    now - start,
                    wait,
                )
            sleep_until(deadline, delay)
        raise AssertionError("unreachable")

    def _try(self) -> bool:
        raise NotImplementedError

    def holder(self) -> str:
        """Who holds the lock, for the log; 'unknown' when it cannot be told."""
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError


class PostgresLock(MigrationLock):
    """A session-level advisory lock on a connection used for nothing else."""

    def __init__(self, engine: Engine) -> None:
        self.conn: Connection = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        self.database = self.conn.execute(text("SELECT current_database()")).scalar_one()
        self.key = lock_key(self.database)
        self.held = False

    def describe(self) -> str:
        return f"advisory key {self.key} of database {self.database!r}"

    def _try(self) -> bool:
        self.held = bool(
            self.conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar()
        )
        return self.held

    def holder(self) -> str:
        row = self.conn.execute(
            text(
                "SELECT a.pid, a.application_name, a.state, host(a.client_addr),"
                " extract(epoch FROM now() - a.backend_start)"
                " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
                " AND l.classid = :hi AND l.objid = :lo"
                " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ),
            {"hi": (self.key >> 32) & 0xFFFFFFFF, "lo": self.key & 0xFFFFFFFF},
        ).first()
        if row is None:
            return "nobody (just released)"
        pid, app, state, addr, age = row
        return (
            f"pid={pid} application_name={app!r} client={addr or 'local'} state={state} "
            f"age={float(age or 0):.1f}s"
        )

    def release(self) -> None:
        try:
            if self.held:
                self.conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
                self.held = False
                log.info("Released migration lock")
        except Exception as exc:  # a dead connection: the server already dropped the lock
            log.warning("Migration lock connection lost (%s); the lock went with it", exc)
        finally:
            self.conn.close()


class FileLock(MigrationLock):
    """An exclusive flock on a file next to the SQLite database."""

    def __init__(self, path: Path) -> None:
        import fcntl

        self._fcntl = fcntl
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        self.held = False

    def describe(self) -> str:
        return f"file {self.path}"

    def _try(self) -> bool:
        try:
            self._fcntl.flock(self.fd, self._fcntl.LOCK_EX | self._fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"pid={os.getpid()} host={os.uname().nodename}\n".encode(), 0)
        self.held = True
        return True

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    def release(self) -> None:
        try:
            if self.held:
                self._fcntl.flock(self.fd, self._fcntl.LOCK_UN)
                self.held = False
                log.info("Released migration lock")
        finally:
            os.close(self.fd)


class NoLock(MigrationLock):
    """An in-memory SQLite database: only this process can see it."""

    def describe(self) -> str:
        return "in-memory database"

    def _try(self) -> bool:
        return True

    def holder(self) -> str:
        return "this process"

    def release(self) -> None:
        log.info("Released migration lock")


def lock_for(engine: Engine) -> MigrationLock:
    """The right lock for the migration engine's database."""
    if engine.dialect.name == "postgresql":
        return PostgresLock(engine)
    database = make_url(str(engine.url)).database
    if engine.dialect.name == "sqlite" and database and database != ":memory:":
        return FileLock(Path(database).with_name(Path(database).name + ".migrate-lock"))
    return NoLock()
