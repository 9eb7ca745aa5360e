"""Sentinel settings: bad values are one-line errors on the CLI, before anything connects."""

from __future__ import annotations

import pytest

from prosaas_core.testing import run_cli


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"REDIS_SENTINELS": "s1:26379,nope"}, "REDIS_SENTINELS entries must be host:port"),
        ({"REDIS_SENTINELS": "s1:26379"}, "REDIS_SENTINELS is set but REDIS_SENTINEL_MASTER"),
    ],
)
def test_bad_sentinel_settings_are_one_line_errors(env, extra, message):
    proc = run_cli("worker", "--burst", env={**env, **extra})
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"error: {message}"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
