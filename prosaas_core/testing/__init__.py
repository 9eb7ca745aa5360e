"""The testing kit: what a plugin's test suite needs to test against real servers.

Installing prosaas registers ``prosaas_core.testing.fixtures`` as a pytest plugin (entry point
``pytest11``), so its fixtures (``pg_url``, ``redis_url``, ``env``, ``runtime``, ``business``,
``token``, ``auth``, ``app``, ``client``, ``cli``, ``worker``, ``serve``...) are there in every
test without a ``conftest.py``. This module holds the helpers, importable without pytest:
databases, a business with a token, real ``prosaas worker`` and ``prosaas serve`` processes and
`wait_until`.

The servers come from the environment: PostgreSQL at ``$PROSAAS_TEST_PG`` (default
``postgresql+psycopg2://postgres@127.0.0.1:5432``), Redis at ``$PROSAAS_TEST_REDIS`` (default
``redis://127.0.0.1:6379``), database ``$PROSAAS_TEST_REDIS_DB`` (default 9, flushed per test).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from prosaas_core.runtime import Runtime

PG_SERVER = os.environ.get("PROSAAS_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432")
REDIS_SERVER = os.environ.get("PROSAAS_TEST_REDIS", "redis://127.0.0.1:6379")
#: with PROSAAS_TEST_PG pointing at a pooler (PgBouncer), its PostgreSQL itself: databases are
#: created there and migrations use it (DATABASE_MIGRATION_URL), see tests/scale/
PG_DIRECT = os.environ.get("PROSAAS_TEST_PG_DIRECT") or None
#: Redis database the tests use (FLUSHDB'd per test); RQ and prosaas keys live there.
REDIS_DB = int(os.environ.get("PROSAAS_TEST_REDIS_DB", "9"))
#: the ``prosaas`` console script of the running interpreter's environment
PROSAAS = str(Path(sys.executable).with_name("prosaas"))

T = TypeVar("T")

__all__ = [
    "PG_SERVER",
    "PROSAAS",
    "REDIS_DB",
    "REDIS_SERVER",
    "ServeProcess",
    "WorkerProcess",
    "auth_header",
    "bearer",
    "business_with_token",
    "create_pg_database",
    "drop_pg_database",
    "free_port",
    "get_job",
    "list_jobs",
    "prosaas_env",
    "run_cli",
    "upgrade",
    "wait_until",
]


# -- polling ----------------------------------------------------------------------------------


def wait_until(
    pred: Callable[[], T], timeout: float = 20.0, what: str = "condition", *, step: float = 0.05
) -> T:
    """Poll `pred` until it returns something truthy and return it; AssertionError naming
    `what` after `timeout` seconds (derive it from the settings under test, with margin)."""
    end = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


# -- databases --------------------------------------------------------------------------------


def _admin_engine() -> Any:
    from sqlalchemy import create_engine

    return create_engine(f"{PG_DIRECT or PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")


def create_pg_database() -> str:
    """Create an empty database with a unique name; return its URL."""
    from sqlalchemy import text

    name = f"prosaas_test_{uuid.uuid4().hex[:12]}"
    engine = _admin_engine()
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return f"{PG_SERVER}/{name}"


def drop_pg_database(url: str) -> None:
    """Drop a database made by `create_pg_database`, whoever is still connected."""
    from sqlalchemy import text

    name = url.rsplit("/", 1)[1]
    engine = _admin_engine()
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def prosaas_env(database_url: str, redis_url: str) -> dict[str, str]:
    """Environment for prosaas subprocesses: this process's, without any ``PROSAAS_*`` or
    start-up switches, pointed at the given servers, with short recovery intervals."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("PROSAAS_")}
    e.update(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        PROSAAS_HEARTBEAT_INTERVAL="1",
        PROSAAS_STALE_AFTER="5",
        PROSAAS_SWEEP_INTERVAL="1",
        PYTHONUNBUFFERED="1",
    )
    if PG_DIRECT:
        e["DATABASE_MIGRATION_URL"] = f"{PG_DIRECT}/{database_url.rsplit('/', 1)[1]}"
    e.pop("RUN_MIGRATIONS", None)
    e.pop("ENABLE_SCHEDULERS", None)
    return e


def business_with_token(rt: Runtime, name: str = "Test business") -> tuple[int, str]:
    """Create a business and a bearer token for it; return (business id, token)."""
    from prosaas_core.models import Business
    from prosaas_core.tokens import create_token

    with rt.session() as s:
        b = Business(name=name)
        s.add(b)
        s.flush()
        return b.id, create_token(s, b.id)


def bearer(token: str) -> dict[str, str]:
    """The ``Authorization`` header for `token`."""
    return {"Authorization": f"Bearer {token}"}


def auth_header(rt: Runtime, business_id: int) -> dict[str, str]:
    """The ``Authorization`` header of a new token for an existing business."""
    from prosaas_core.tokens import create_token

    with rt.session() as s:
        return bearer(create_token(s, business_id))


def upgrade(rt: Runtime) -> Any:
    """Migrate `rt`'s database to the installed plugin set (what ``prosaas db upgrade`` does)."""
    from prosaas_core import migrate

    return migrate.upgrade(rt)


def get_job(rt: Runtime, job_id: int) -> dict[str, Any]:
    """One job as an operator sees it (``prosaas jobs show --json``)."""
    from prosaas_core.jobs import control

    return control.get_job(rt, job_id)


def list_jobs(rt: Runtime, **filters: Any) -> list[dict[str, Any]]:
    """Jobs as an operator lists them (``prosaas jobs list --json``); filters as its options:
    ``business_id``, ``status``, ``job_type``, ``limit``."""
    from prosaas_core.jobs import control

    return control.list_jobs(rt, **filters)


# -- processes --------------------------------------------------------------------------------


def run_cli(
    *args: str, env: dict[str, str], check: bool = False, timeout: float = 120, **kw: Any
) -> subprocess.CompletedProcess[str]:
    """Run the installed `prosaas` console script; output captured as text."""
    proc = subprocess.run(
        [PROSAAS, *args], env=env, capture_output=True, text=True, timeout=timeout, **kw
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"prosaas {' '.join(args)} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def free_port() -> int:
    """A TCP port nothing listens on right now (127.0.0.1)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class WorkerProcess:
    """A real ``prosaas worker`` subprocess (``args`` are its options) whose combined output
    goes to `log_path` (a temporary file when not given), read as it runs."""

    def __init__(self, env: dict[str, str], *args: str, log_path: Path | None = None) -> None:
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix="prosaas-worker-", suffix=".log")
            os.close(fd)
            log_path = Path(name)
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 (closed in wait/stop/kill)
        self.proc = subprocess.Popen(
            [PROSAAS, "worker", *args],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        """Everything the worker printed so far."""
        return self.log_path.read_text(errors="replace")

    @property
    def output(self) -> str:
        return self.log()

    def wait_for_log(self, needle: str, timeout: float = 15.0, count: int = 1) -> str:
        """Wait until `needle` was printed `count` times (or the worker exited); the log."""
        wait_until(
            lambda: self.log().count(needle) >= count or self.proc.poll() is not None,
            timeout,
            f"{needle!r} in worker log",
        )
        text = self.log()
        if text.count(needle) < count:
            raise AssertionError(f"{needle!r} not in worker log (exit {self.proc.poll()}):\n{text}")
        return text

    def wait_for_line(self, text: str, timeout: float = 20.0) -> str:
        """Wait for the first line containing `text`; return that line."""

        def found() -> str | None:
            return next((ln for ln in self.log().splitlines() if text in ln), None)

        try:
            line = wait_until(found, timeout, f"{text!r} in worker log")
            assert line is not None  # wait_until returns only a truthy value
            return line
        except AssertionError:
            raise AssertionError(f"{text!r} not logged; output:\n{self.log()}") from None

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def wait(self, timeout: float = 20.0) -> int:
        """Wait for the worker to exit (``--burst``, or after a signal); its exit code."""
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM (a graceful shutdown) and wait; its exit code. Killed, and TimeoutExpired
        raised, when it does not exit within `timeout`."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        finally:
            self._log.close()

    def kill(self) -> None:
        """Make sure the process is gone (SIGKILL; test teardown)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._log.close()


class ServeProcess:
    """``prosaas serve`` (or any command serving HTTP) in a subprocess, stopped on exit."""

    def __init__(
        self,
        env: dict[str, str],
        *,
        workers: int = 1,
        threads: int = 4,
        args: list[str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = args or [
            PROSAAS,
            "serve",
            "--port",
            str(self.port),
            "--workers",
            str(workers),
            "--threads",
            str(threads),
        ]
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> ServeProcess:
        import requests

        out: Any = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [c.replace("{port}", str(self.port)) for c in self.cmd],
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log()}")
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code < 500:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not answer within {timeout}s: {self.log()}")

    def log(self) -> str:
        if self.log_path and self.log_path.exists():
            return self.log_path.read_text(errors="replace")[-4000:]
        return "(no log)"

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)  # gunicorn's master and its workers
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
