"""`prosaas demo` runs end to end with no services at all: SQLite in the working directory and,
with nothing listening at REDIS_URL, the in-process Redis stand-in."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

PROSAAS = str(Path(sys.executable).with_name("prosaas"))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_demo_runs_in_an_empty_directory_with_no_services(tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PROSAAS_") and k not in ("DATABASE_URL", "MIGRATION_DATABASE_URL")
    }
    env["REDIS_URL"] = f"redis://127.0.0.1:{_closed_port()}/0"
    proc = subprocess.run(
        [PROSAAS, "demo", "--leads", "1500"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "No Redis answers at redis://127.0.0.1:" in out
    assert "in-process stand-in" in out
    assert "Imported 1000 leads" in out and "Imported 500 leads" in out
    assert "updated      1000 leads" in out
    assert "deleted      500 leads" in out
    # with the broadcast plugin installed the demo adds three leads and sends them a broadcast,
    # on the stand-in too (its Lua runs the rate limiter)
    assert "remaining    1003 leads (1000 contacted, 3 new)" in out
    assert "broadcast    3 messages sent through the log provider" in out
    assert out.count("100.0%") == 3  # every progress bar reached the end
    assert (tmp_path / "prosaas.db").exists()


def test_demo_uses_a_real_redis_when_one_answers(tmp_path, redis_url):
    import redis

    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PROSAAS_") and k not in ("DATABASE_URL", "MIGRATION_DATABASE_URL")
    }
    env["REDIS_URL"] = redis_url
    proc = subprocess.run(
        [PROSAAS, "demo", "--leads", "300"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"transport    Redis at {redis_url}" in proc.stdout
    assert "stand-in" not in proc.stdout
    # the jobs really went through that Redis: RQ left its keys there
    assert redis.Redis.from_url(redis_url).keys("rq:*")
