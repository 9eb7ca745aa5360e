"""`prosaas broadcasts list|show` (the installed console script) and the plugin's settings."""

from __future__ import annotations

import json

import pytest
from prosaas_broadcast.config import BroadcastConfig
from prosaas_broadcast.testing import add_leads, phone

from prosaas_core.errors import ConfigError
from prosaas_core.settings import Settings


def test_list_and_show(runtime, client, auth, business, cli):
    add_leads(runtime, business, [{"name": "Ann", "phone": phone(1)}, {"name": "X", "phone": "1"}])
    bid = client.post(
        "/api/broadcasts", json={"all": True, "template": "Hi {name}"}, headers=auth
    ).get_json()["id"]
    proc = cli("broadcasts", "list", "--business", str(business), "--json", check=True)
    [row] = json.loads(proc.stdout)
    assert row["id"] == bid and row["status"] == "queued"
    proc = cli("broadcasts", "show", str(bid), "--json", check=True)
    shown = json.loads(proc.stdout)
    assert shown["business_id"] == business and shown["template"] == "Hi {name}"
    text = cli("broadcasts", "show", str(bid), check=True).stdout
    assert f"broadcast {bid} (queued)" in text and "webhook" in text
    proc = cli("broadcasts", "show", str(bid), "--business", str(business + 1))
    assert proc.returncode == 1 and proc.stderr.strip() == f"error: broadcast {bid} not found"
    assert "Traceback" not in proc.stderr
    proc = cli("broadcasts", "list", "--business", "x")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "env, needle",
    [
        ({"BROADCAST_RATE": "fast"}, "BROADCAST_RATE"),
        ({"BROADCAST_MAX_ATTEMPTS": "0"}, "BROADCAST_MAX_ATTEMPTS"),
        ({"BROADCAST_HTTP_TIMEOUT": "10", "BROADCAST_SENDING_STALE_SECONDS": "15"}, "twice"),
    ],
)
def test_bad_settings_fail_naming_the_key(env, needle):
    with pytest.raises(ConfigError, match=needle):
        BroadcastConfig.from_settings(Settings(env=env))


def test_a_broadcast_rate_is_never_above_the_business_rate():
    cfg = BroadcastConfig.from_settings(Settings(env={"BROADCAST_RATE": "20/s"}))
    assert cfg.effective_rate(None).per_second == 20
    assert cfg.effective_rate(500).per_second == 20
    assert cfg.effective_rate(5).per_second == 5
    assert round(cfg.effective_rate(0.5).per_second, 3) == 0.5
    assert BroadcastConfig.from_settings(Settings(env={"BROADCAST_RATE": "7"})).rate.per_second == 7
