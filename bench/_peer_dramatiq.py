"""Dramatiq actor of bench/peers.py: Redis broker, default middleware (no result backend:
Dramatiq stores no results unless one is configured)."""

from __future__ import annotations

import os

import _peer_tasks
import dramatiq
from dramatiq.brokers.redis import RedisBroker

broker = RedisBroker(url=os.environ["PEERS_REDIS_URL"])
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="peers", actor_name="peers_echo")
def echo(message: str) -> dict:
    return _peer_tasks.echo(message)
