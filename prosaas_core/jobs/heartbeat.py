"""The worker heartbeat in Redis: who is alive, on which queues, with which services.

Each worker refreshes ``prosaas:worker:<name>`` (a JSON object, expiring after a few missed
beats) and belongs to the set ``prosaas:workers``; ``live_workers`` reads them back.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from prosaas_core.runtime import Runtime

log = logging.getLogger("prosaas.worker")

WORKERS_KEY = "prosaas:workers"
WORKER_KEY = "prosaas:worker:{}"


def _ttl(interval: float) -> int:
    """A worker is gone after three missed beats (at least 5 seconds)."""
    return max(5, math.ceil(interval * 3))


class WorkerHeartbeat:
    """A thread writing this worker's record every `interval` seconds."""

    def __init__(
        self,
        rt: Runtime,
        name: str,
        queues: list[str],
        services: Callable[[], dict[str, dict[str, Any]]],
        current_job: Callable[[], int | None] = lambda: None,
    ) -> None:
        self.rt = rt
        self.name = name
        self.queues = list(queues)
        self.services = services
        self.current_job = current_job
        self.interval = rt.settings.heartbeat_interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "queues": self.queues,
            "services": self.services(),
            "current_job": self.current_job(),
            "last_seen": time.time(),
        }

    def beat(self) -> None:
        r = self.rt.redis
        with r.pipeline() as p:
            p.set(WORKER_KEY.format(self.name), json.dumps(self.record()), ex=_ttl(self.interval))
            p.sadd(WORKERS_KEY, self.name)
            p.execute()

    def start(self) -> None:
        self.beat()
        self._thread = threading.Thread(target=self._loop, name="worker-heartbeat", daemon=True)
        self._thread.start()
        log.info("Heartbeat monitoring started (every %gs)", self.interval)

    def _loop(self) -> None:
        from prosaas_core.jobs.outage import Outage

        outage = Outage("redis", "worker heartbeat", log)
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except Exception as exc:  # Redis down: keep trying, the record simply expires
                outage.failed(exc)
            else:
                outage.ok()

    def stop(self) -> None:
        """Stop beating and remove the record: a clean exit is not a dead worker."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        try:
            with self.rt.redis.pipeline() as p:
                p.delete(WORKER_KEY.format(self.name))
                p.srem(WORKERS_KEY, self.name)
                p.execute()
        except Exception as exc:
            log.warning("could not remove worker heartbeat: %s", exc)


def live_workers(rt: Runtime) -> list[dict]:
    """Every worker whose heartbeat has not expired, sorted by name: ``{name, host, pid, queues,
    services: {name: {state, restarts, last_error}}, last_seen}``."""
    r = rt.request_redis  # read by requests and operators: fail fast on a hung Redis
    names = sorted(n.decode() for n in cast("set[bytes]", r.smembers(WORKERS_KEY)))
    if not names:
        return []
    values = r.mget([WORKER_KEY.format(n) for n in names])
    live, gone = [], []
    for name, raw in zip(names, values, strict=True):
        if raw is None:
            gone.append(name)
        else:
            live.append(json.loads(raw))
    if gone:
        r.srem(WORKERS_KEY, *gone)
    return live
