"""Servers a fault test may stop, freeze and restart: its own PostgreSQL and Redis on spare
ports, never the shared ones. Used by the slow fault suite (tests/faults/) and
bench/recovery.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

PG_BIN = Path(os.environ.get("PROSAAS_PG_BIN", "/usr/lib/postgresql/15/bin"))
REDIS_SERVER = shutil.which("redis-server") or "redis-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 15.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on port {port} after {timeout}s")


class RedisServer:
    """A throw-away redis-server that keeps nothing on disk (as in production)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.dir = tempfile.mkdtemp(prefix="prosaas-redis-")

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port)
        return self

    def kill(self) -> None:
        """Gone at once (SIGKILL): connections drop, the data with them."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def freeze(self) -> None:
        """Hung, not down: it accepts connections (the kernel does) and never answers."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def _as_postgres(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["runuser", "-u", "postgres", "--", *args],
        check=True,
        capture_output=True,
        text=True,
        **kw,
    )


class PgServer:
    """A throw-away PostgreSQL cluster (initdb in a temp directory owned by postgres), tuned
    for tests: no fsync. `stop`/`start`/`restart` and backend termination are the faults."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="prosaas-pg-"))
        self.data = self.dir / "data"
        #: the processes `hold_wal` stopped
        self.held: list[int] = []
        shutil.chown(self.dir, "postgres", "postgres")
        _as_postgres(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
            "--no-sync", "-E", "UTF8",
        )  # fmt: skip

    @property
    def server(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}"

    def url(self, db: str) -> str:
        return f"{self.server}/{db}"

    def start(self) -> PgServer:
        opts = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200 "
            "-c shared_buffers=32MB"
        )
        _as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", opts, "-l",
            str(self.dir / "log"), "-w", "-t", "60", "start",
        )  # fmt: skip
        return self

    def stop(self, mode: str = "fast") -> None:
        _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def _postmaster(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def freeze(self) -> None:
        """Hung, not down: the postmaster (SIGSTOP) accepts no new session, though the kernel
        still completes the TCP handshake; sessions already open keep their backends."""
        os.kill(self._postmaster(), signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self._postmaster(), signal.SIGCONT)

    def hold_wal(self) -> None:
        """Nothing writes the WAL out in the background any more (the WAL writer, background
        writer, checkpointer and autovacuum launcher are SIGSTOPped): a commit that does not
        wait for the disk stays in shared memory until a synchronous commit flushes it, or a
        `crash` loses it. `release_wal`, `crash` or `close` ends the hold."""
        for (pid,) in self.sql(
            "SELECT pid FROM pg_stat_activity WHERE backend_type IN ('walwriter', "
            "'background writer', 'checkpointer', 'autovacuum launcher')"
        ):
            os.kill(pid, signal.SIGSTOP)
            self.held.append(pid)

    def release_wal(self) -> None:
        for pid in self.held:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        self.held.clear()

    def crash(self) -> None:
        """The server dies at once, all its processes SIGKILLed (a power cut, as far as
        PostgreSQL can tell): what was only in its shared memory is gone, and the next
        `start` runs crash recovery."""
        postmaster = self._postmaster()
        pids = [postmaster, *children(postmaster)]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.held.clear()
        # every one gone, reaped too (a backend still attached to the shared memory, or a
        # postmaster pid that still exists, would stop the next start)
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() for pid in pids):
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL processes still there 10 s after SIGKILL: {pids}")
            time.sleep(0.02)

    def close(self) -> None:
        self.release_wal()
        try:
            self.thaw()
        except (OSError, ValueError):
            pass
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- databases ----------------------------------------------------------------------------

    def _admin(self):
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        return create_engine(
            f"{self.server}/postgres", isolation_level="AUTOCOMMIT", poolclass=NullPool
        )

    def sql(self, statement: str, params: dict | None = None) -> list:
        from sqlalchemy import text

        engine = self._admin()
        try:
            with engine.connect() as conn:
                res = conn.execute(text(statement), params or {})
                return list(res) if res.returns_rows else []
        finally:
            engine.dispose()

    def create_database(self, template: str | None = None) -> str:
        name = f"faults_{uuid.uuid4().hex[:10]}"
        self.sql(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        return name

    def terminate_backends(self, db: str, application_name: str = "prosaas") -> int:
        """pg_terminate_backend on every session of `db` with `application_name`."""
        rows = self.sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = :d AND application_name = :a AND pid <> pg_backend_pid()",
            {"d": db, "a": application_name},
        )
        return len(rows)


def children(pid: int) -> list[int]:
    """The pids whose parent is `pid` (a forking worker's work horse)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(entry.name))
    return out


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
