"""procrastinate app of bench/peers.py: its own schema in its own PostgreSQL database
(``$PEERS_PG_DSN``), a job row per task as prosaas keeps."""

from __future__ import annotations

import os

import _peer_tasks
from procrastinate import App, PsycopgConnector

app = App(connector=PsycopgConnector(conninfo=os.environ["PEERS_PG_DSN"]))


@app.task(name="peers_echo", queue="peers")
def echo(message: str) -> dict:
    return _peer_tasks.echo(message)


@app.task(name="peers_slow", queue="peers")
def slow(marker: str, seconds: float) -> dict:
    return _peer_tasks.slow(marker, seconds)
