"""huey app of bench/peers.py: RedisHuey (blocking dequeue, results stored: its defaults)."""

from __future__ import annotations

import os

import _peer_tasks
from huey import RedisHuey

huey = RedisHuey("peers", url=os.environ["PEERS_REDIS_URL"])


@huey.task(name="peers_echo")
def echo(message: str) -> dict:
    return _peer_tasks.echo(message)


@huey.task(name="peers_slow")
def slow(marker: str, seconds: float) -> dict:
    return _peer_tasks.slow(marker, seconds)
