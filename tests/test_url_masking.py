"""No password of a DATABASE_URL or REDIS_URL is ever printed: one helper masks them, and the
worker exits 1 with one line when Redis is unreachable at start."""

from __future__ import annotations

import pytest

from prosaas_core.urls import mask_url, mask_urls_in

SECRET = "hunter2secret"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (f"redis://:{SECRET}@h:6379/0", "redis://:***@h:6379/0"),
        (f"rediss://user:{SECRET}@h/1", "rediss://user:***@h/1"),
        (
            f"postgresql://u:{SECRET}@h/db?sslmode=require",
            "postgresql://u:***@h/db?sslmode=require",
        ),
        (f"postgresql://u@h/db?password={SECRET}", "postgresql://u@h/db?password=***"),
        ("redis://h:6379/0", "redis://h:6379/0"),
        ("sqlite:///prosaas.db", "sqlite:///prosaas.db"),
    ],
)
def test_mask_url(url, masked):
    assert mask_url(url) == masked


def test_mask_urls_in_text():
    assert SECRET not in mask_urls_in(f"cannot reach redis://u:{SECRET}@h:1/0 (refused)")


def test_worker_exits_1_without_printing_the_password(cli):
    res = cli(
        "worker", "--burst", extra_env={"REDIS_URL": f"redis://:{SECRET}@127.0.0.1:1/0"}, timeout=60
    )
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert "Redis unreachable at redis://:***@127.0.0.1:1/0" in res.stderr
    assert "Traceback" not in res.stderr
    assert SECRET not in res.stdout + res.stderr


def test_doctor_masks_both_urls(cli, env):
    res = cli(
        "doctor",
        extra_env={
            "REDIS_URL": f"redis://:{SECRET}@127.0.0.1:1/0",
            "DATABASE_URL": f"postgresql://postgres:{SECRET}@127.0.0.1:1/nothing",
        },
        timeout=60,
    )
    assert res.returncode != 0
    out = res.stdout + res.stderr
    assert "Redis unreachable (redis://:***@127.0.0.1:1/0)" in out
    assert "database unreachable (postgresql+psycopg2://postgres:***@127.0.0.1:1/nothing)" in out
    assert SECRET not in out
