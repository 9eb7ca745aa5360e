"""Fixtures of the broadcast tests, beside the testing kit's (``prosaas_core.testing``): the
local provider server and the env every prosaas process of a test gets (overriding the kit's
``env``, so ``runtime``, ``cli``, ``business``, ``client``, ``auth`` and ``start_worker`` use
it)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prosaas_broadcast.testing import FakeProvider, provider_env


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: real worker processes, seconds of sending")


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider() as f:
        yield f


@pytest.fixture
def env(env: dict[str, str], fake: FakeProvider) -> dict[str, str]:
    return {
        **env,
        **provider_env(fake),
        "BROADCAST_PROVIDER": "webhook",
        "BROADCAST_RATE": "1000/s",
        "BROADCAST_HTTP_TIMEOUT": "1",
        "BROADCAST_SENDING_STALE_SECONDS": "3",
        "BROADCAST_RETRY_BASE_SECONDS": "0.1",
        "BROADCAST_RETRY_MAX_SECONDS": "0.5",
        "BROADCAST_SCHEDULER_INTERVAL": "0.5",
        "BROADCAST_PUBLIC_BASE_URL": "https://hooks.example.com",
        # the other Twilio webhooks (recordings, outbound_calls): with a token set, the API
        # does not start without a public base URL
        "TWILIO_WEBHOOK_BASE_URL": "https://hooks.example.com",
        "PROSAAS_DISABLE_SERVICES": "recording-worker,acme-ticker",
        "PROSAAS_SHUTDOWN_TIMEOUT": "5",
    }
