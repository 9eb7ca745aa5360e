"""Fixtures of the broadcast tests: the local provider server, the env every prosaas process of
a test gets (overriding the root ``env``, so ``runtime``, ``cli``, ``business`` and
``start_worker`` use it), leads, API clients and a way to wait for a broadcast."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prosaas_broadcast.testing import FakeProvider, provider_env, token_for


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


@pytest.fixture
def app(runtime):
    from prosaas_core import create_app

    return create_app(runtime=runtime)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def auth(runtime, business) -> dict:
    return token_for(runtime, business)
