"""Dramatiq actor of bench/peers.py: Redis broker, default middleware (no result backend:
Dramatiq stores no results unless one is configured)."""

from __future__ import annotations

import os

import _peer_tasks
import dramatiq
from dramatiq.brokers.redis import RedisBroker

# peers.py --kill-check scales the dead-worker timeout down (default 60 s) and makes every
# consumer poll do maintenance, so a redelivery shows within its window; never for the drain
_fast = os.environ.get("PEERS_DRAMATIQ_HEARTBEAT_MS")
broker = RedisBroker(
    url=os.environ["PEERS_REDIS_URL"],
    **({"heartbeat_timeout": int(_fast), "maintenance_chance": 1_000_000} if _fast else {}),
)
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="peers", actor_name="peers_echo")
def echo(message: str) -> dict:
    return _peer_tasks.echo(message)


@dramatiq.actor(queue_name="peers", actor_name="peers_slow")
def slow(marker: str, seconds: float) -> dict:
    return _peer_tasks.slow(marker, seconds)
