"""Twilio-signed webhooks are not served in production without a public base URL: with
TWILIO_AUTH_TOKEN set and no base URL, `create_app()` and `prosaas serve` refuse to start (one
line, exit 1); TWILIO_WEBHOOK_TRUST_HOST=1 is the development switch."""

from __future__ import annotations

import pytest

from prosaas_core import create_app
from prosaas_core.api.webhooks import WebhookConfigError
from prosaas_core.testing import free_port, run_cli

#: each plugin serving a Twilio-signed webhook, its path and the setting it names
WEBHOOKS = {
    "recordings": ("/webhooks/twilio/recording", "TWILIO_WEBHOOK_BASE_URL"),
    "broadcast": ("/webhooks/twilio/broadcast-status", "BROADCAST_PUBLIC_BASE_URL"),
    "outbound_calls": ("/webhooks/twilio/outbound-call-status", "TWILIO_WEBHOOK_BASE_URL"),
}


def only(plugin: str) -> str:
    """PROSAAS_DISABLE_PLUGINS leaving `plugin` the only Twilio webhook mounted."""
    return ",".join(p for p in WEBHOOKS if p != plugin)


@pytest.fixture
def prod(env):
    """A production environment: a Twilio auth token, no base URL, no development switch."""
    e = {k: v for k, v in env.items() if not k.startswith(("TWILIO_", "BROADCAST_"))}
    return {**e, "TWILIO_AUTH_TOKEN": "secret"}


@pytest.mark.parametrize("plugin", list(WEBHOOKS))
def test_each_twilio_webhook_refuses_to_start_without_a_base_url(prod, plugin):
    path, setting = WEBHOOKS[plugin]
    with pytest.raises(WebhookConfigError) as err:
        create_app({**prod, "PROSAAS_DISABLE_PLUGINS": only(plugin)})
    message = str(err.value)
    assert f"plugin {plugin!r}" in message and path in message and setting in message
    assert "TWILIO_WEBHOOK_TRUST_HOST=1" in message


@pytest.mark.parametrize(
    "extra",
    [
        {"TWILIO_WEBHOOK_BASE_URL": "https://api.example.com"},  # every plugin reads it
        {"TWILIO_WEBHOOK_TRUST_HOST": "1"},  # development
        {"TWILIO_AUTH_TOKEN": ""},  # no token: no signature is checked, webhooks answer 503
    ],
)
def test_a_base_url_the_switch_or_no_token_starts(prod, extra):
    app = create_app({**prod, **extra})
    mounted = {rule.rule for rule in app.url_map.iter_rules()}
    assert {path for path, _ in WEBHOOKS.values()} <= mounted


def test_serve_refuses_with_one_line_and_exit_1(prod):
    proc = run_cli("serve", "--port", str(free_port()), env=prod, timeout=60)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: plugin ") and "TWILIO_WEBHOOK_BASE_URL" in lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""
