"""Plugin services: long-running loops every worker runs, each in its own supervised thread.

Every installed Service starts in every ``prosaas worker``, whatever ``ENABLE_SCHEDULERS`` says
(a service gated on a flag is a service that silently never runs: docs/architecture.md, "Why it
is built this way"); only ``PROSAAS_DISABLE_SERVICES`` turns one off, and that is logged. A crash
is logged with its traceback and the service restarted with exponential backoff; a bad setting
(``ConfigError``) is logged as its one-line message, without a traceback.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prosaas_core.backoff import exponential
from prosaas_core.errors import ConfigError

if TYPE_CHECKING:
    import redis
    from sqlalchemy import Connection
    from sqlalchemy.orm import Session

    from prosaas_core.limits import Limits
    from prosaas_core.registry import Service
    from prosaas_core.runtime import Runtime
    from prosaas_core.settings import Settings
    from prosaas_core.store import Db

log = logging.getLogger("prosaas.services")

#: a service that ran this long without crashing gets its backoff reset
STABLE_AFTER = 60.0


@dataclass
class ServiceContext:
    """What ``Service.run(ctx)`` gets: loop until ``ctx.stop_event`` is set."""

    name: str
    stop_event: threading.Event
    runtime: Runtime
    log: logging.Logger

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    @property
    def redis(self) -> redis.Redis:
        return self.runtime.redis

    @property
    def limits(self) -> Limits:
        """Slots and rate limits shared by every worker (``prosaas_core.limits``)."""
        return self.runtime.limits

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A SQLAlchemy session in a transaction: committed on success, rolled back on error."""
        with self.runtime.session() as s:
            yield s

    @contextmanager
    def db(self) -> Iterator[Db]:
        """A `prosaas_core.store.Db` in autocommit mode, for the service's named queries: each
        commits on its own, one round trip, alike on PostgreSQL and SQLite."""
        from prosaas_core.store import connect

        with connect(self.runtime.engine) as db:
            yield db

    @contextmanager
    def autocommit(self) -> Iterator[Connection]:
        """A connection in autocommit mode: each statement commits on its own, no BEGIN/COMMIT
        round trips (for a service's hot single-statement writes)."""
        from prosaas_core.db import autocommit

        with autocommit(self.runtime.engine) as conn:
            yield conn


@dataclass
class ServiceState:
    """One service's state as the worker heartbeat reports it."""

    state: str = "starting"  # running | restarting | stopped | disabled
    restarts: int = 0
    last_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state, "restarts": self.restarts, "last_error": self.last_error}


def started_line(name: str) -> str:
    """The greppable start line: ``acme-ticker`` -> ``ACME-TICKER STARTED``."""
    return f"{name.upper()} STARTED"


@dataclass
class Supervisor:
    """Starts, restarts and stops the installed services of one worker."""

    rt: Runtime
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    stop_event: threading.Event = field(default_factory=threading.Event)
    states: dict[str, ServiceState] = field(default_factory=dict)
    _threads: dict[str, threading.Thread] = field(default_factory=dict)

    @classmethod
    def from_runtime(cls, rt: Runtime) -> Supervisor:
        return cls(
            rt,
            backoff_base=rt.settings.service_backoff,
            backoff_max=rt.settings.service_backoff_max,
        )

    def start(self) -> None:
        """Start every installed service not disabled by PROSAAS_DISABLE_SERVICES."""
        disabled = self.rt.settings.disable_services
        services = self.rt.registry.services
        for name in sorted(disabled - set(services)):
            log.warning(
                "PROSAAS_DISABLE_SERVICES names %r, which no installed plugin provides", name
            )
        for name, svc in sorted(services.items()):
            if name in disabled:
                self.states[name] = ServiceState(state="disabled")
                log.warning("SERVICE DISABLED %s (PROSAAS_DISABLE_SERVICES)", name)
                continue
            self.states[name] = ServiceState()
            thread = threading.Thread(
                target=self._supervise, args=(svc,), name=f"service-{name}", daemon=True
            )
            self._threads[name] = thread
            thread.start()

    def _supervise(self, svc: Service) -> None:
        state = self.states[svc.name]
        svc_log = logging.getLogger(f"prosaas.service.{svc.name}")
        ctx = ServiceContext(svc.name, self.stop_event, self.rt, svc_log)
        failures = 0  # crashes in a row; a run of STABLE_AFTER seconds starts the count again
        while not self.stop_event.is_set():
            state.state = "running"
            log.info(started_line(svc.name))
            began = time.monotonic()
            crash: Exception | None = None
            try:
                svc.run(ctx)
            except Exception as exc:
                crash = exc
            if crash is None and self.stop_event.is_set():
                break
            failures = 1 if time.monotonic() - began >= STABLE_AFTER else failures + 1
            delay = exponential(failures, self.backoff_base, self.backoff_max)
            if isinstance(crash, ConfigError):  # the operator's to fix, and the message says how
                state.last_error = f"{type(crash).__name__}: {crash}"
                log.error("SERVICE CRASHED %s: %s; restarting in %.1fs", svc.name, crash, delay)
            elif crash is not None:
                state.last_error = f"{type(crash).__name__}: {crash}"
                log.error(
                    "SERVICE CRASHED %s: restarting in %.1fs", svc.name, delay, exc_info=crash
                )
            else:
                state.last_error = "run() returned before stop_event was set"
                log.warning("SERVICE EXITED %s before stop: restarting in %.1fs", svc.name, delay)
            state.state = "restarting"
            state.restarts += 1
            if self.stop_event.wait(delay):
                break
        state.state = "stopped"
        log.info("SERVICE STOPPED %s", svc.name)

    def stop(self, timeout: float = 10.0) -> list[str]:
        """Set stop_event and join every thread within `timeout` seconds in total. Returns the
        services that did not stop in time (their daemon threads die with the process)."""
        self.stop_event.set()
        end = time.monotonic() + timeout
        late = []
        for name, thread in self._threads.items():
            thread.join(max(end - time.monotonic(), 0))
            if thread.is_alive():
                late.append(name)
                log.warning("SERVICE %s did not stop within %.0fs", name, timeout)
        return late

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Each service's state, restarts and last error."""
        return {name: st.as_dict() for name, st in sorted(self.states.items())}
