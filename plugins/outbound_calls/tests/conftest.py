"""Fixtures of the outbound-calls tests, beside the testing kit's (``prosaas_core.testing``): a
local Twilio stand-in, prosaas's HTTP app served for real on a local port (Twilio's callbacks
need a URL), the env every prosaas process of a test gets (overriding the kit's ``env``, so its
``runtime``, ``app`` and ``client`` use it), businesses with caller ids and leads."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from prosaas_outbound_calls.testing import (
    TEST_ACCOUNT_SID,
    TEST_AUTH_TOKEN,
    FakeTwilio,
    add_business,
)

from prosaas_core.testing import free_port


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    with FakeTwilio() as f:
        yield f


@pytest.fixture
def web_port() -> int:
    return free_port()


@pytest.fixture
def recordings_dir(tmp_path: Path) -> Path:
    return tmp_path / "recordings"


@pytest.fixture
def env(env: dict[str, str], fake: FakeTwilio, web_port: int, recordings_dir: Path):
    """The root env plus Twilio pointed at the fake, callbacks at the local app, short timers."""
    return {
        **env,
        "TWILIO_ACCOUNT_SID": TEST_ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": TEST_AUTH_TOKEN,
        "TWILIO_WEBHOOK_BASE_URL": f"http://127.0.0.1:{web_port}",
        "OUTBOUND_CALLS_TWILIO_API_URL": fake.url,
        "OUTBOUND_CALLS_TWIML_URL": "https://example.test/twiml",
        "OUTBOUND_CALLS_POLL_INTERVAL": "0.2",
        "OUTBOUND_CALLS_SWEEP_INTERVAL": "0.5",
        "OUTBOUND_CALLS_HTTP_TIMEOUT": "1",
        "OUTBOUND_CALLS_RECONCILE_AFTER": "3",
        "OUTBOUND_CALLS_SLOT_TIMEOUT": "30",
        "OUTBOUND_CALLS_MAX_CONCURRENT": "20",
        "OUTBOUND_CALLS_MAX_CALLS_PER_SECOND": "50",
        "RECORDINGS_DIR": str(recordings_dir),
        "RECORDINGS_ALLOWED_HOSTS": fake.host,
        "RECORDINGS_ALLOW_HTTP": "1",
        "RECORDINGS_POLL_INTERVAL": "0.05",
        "RECORDINGS_LEASE_SECONDS": "5",
        "PROSAAS_SERVICE_BACKOFF": "0.2",
        "PROSAAS_SHUTDOWN_TIMEOUT": "5",
    }


@pytest.fixture
def web(app, web_port) -> Iterator[str]:
    """The app on a real local port (threaded), where the fake sends its callbacks."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", web_port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{web_port}"
    server.shutdown()


@pytest.fixture
def acme(runtime) -> tuple[int, dict[str, str]]:
    return add_business(runtime, "Acme Calls")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: real-process fault tests (still run by make test)")
