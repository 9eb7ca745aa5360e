"""Celery app of bench/peers.py: Redis broker and Redis result backend, defaults otherwise
(acks on receipt, prefetch multiplier 4); run with ``celery worker --pool solo``."""

from __future__ import annotations

import os

import _peer_tasks
from celery import Celery

URL = os.environ["PEERS_REDIS_URL"]
app = Celery("peers", broker=URL, backend=URL)
app.conf.update(task_default_queue="peers", broker_connection_retry_on_startup=True)


@app.task(name="peers.echo")
def echo(message: str) -> dict:
    return _peer_tasks.echo(message)


@app.task(name="peers.slow")
def slow(marker: str, seconds: float) -> dict:
    return _peer_tasks.slow(marker, seconds)
