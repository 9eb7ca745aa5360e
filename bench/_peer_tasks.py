"""The trivial job of bench/peers.py, shared by every peer (and plain RQ's function itself).

The job returns a small dict, as prosaas's acme_echo does. Each run records when it finished in
memory; when the worker process has run ``$PEERS_EXPECT`` of them it writes the list (Unix
times) to ``$PEERS_OUT`` at once, so the measure adds no I/O per job to any peer. The drain rate
is then computed from the first and last finish, as for prosaas (its rows' ``finished_at``).
"""

from __future__ import annotations

import json
import os
import time

_done: list[float] = []
_expect = int(os.environ.get("PEERS_EXPECT", "0"))
_out = os.environ.get("PEERS_OUT", "")


def record() -> None:
    _done.append(time.time())
    if len(_done) == _expect and _out:
        tmp = f"{_out}.tmp"
        with open(tmp, "w") as f:
            json.dump(_done, f)
        os.replace(tmp, _out)  # the bench polls for this file: it appears whole


def echo(message: str) -> dict:
    """The job: what acme_echo returns, plus the in-memory finish time."""
    result = {"echo": message, "attempt": 1}
    record()
    return result


def slow(marker: str, seconds: float) -> dict:
    """The job of peers.py --kill-check: says it started (``marker.started``), sleeps, then says
    it finished (``marker.done``); each line is the pid of the process that ran it."""
    with open(f"{marker}.started", "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(seconds)
    with open(f"{marker}.done", "a") as f:
        f.write(f"{os.getpid()}\n")
    return {"slept": seconds}
