"""Fixtures of the recordings tests, beside the testing kit's (``prosaas_core.testing``): a
local Twilio stand-in, the env every prosaas process of a test gets (overriding the kit's
``env``, so ``runtime``, ``cli``, ``business``, ``app`` and ``client`` use it), signed webhook
calls and worker processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prosaas_recordings.testing import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, StubTwilio, sign

from prosaas_core.testing import WorkerProcess

TOKEN, ACCOUNT = TEST_AUTH_TOKEN, TEST_ACCOUNT_SID


@pytest.fixture
def stub() -> Iterator[StubTwilio]:
    with StubTwilio(account_sid=ACCOUNT, auth_token=TOKEN) as s:
        yield s


@pytest.fixture
def recordings_dir(tmp_path: Path) -> Path:
    return tmp_path / "recordings"


@pytest.fixture
def env(env: dict[str, str], stub: StubTwilio, recordings_dir: Path) -> dict[str, str]:
    """The root env plus Twilio credentials, the stub as the one allowed host, short timers."""
    return {
        **env,
        "TWILIO_ACCOUNT_SID": ACCOUNT,
        "TWILIO_AUTH_TOKEN": TOKEN,
        "RECORDINGS_DIR": str(recordings_dir),
        "RECORDINGS_ALLOWED_HOSTS": stub.host,
        "RECORDINGS_ALLOW_HTTP": "1",
        "TWILIO_WEBHOOK_TRUST_HOST": "1",  # the test client signs for http://localhost
        "RECORDINGS_POLL_INTERVAL": "0.05",
        "RECORDINGS_LEASE_SECONDS": "1.5",
        "RECORDINGS_RETRY_BASE_SECONDS": "0.2",
        "RECORDINGS_RETRY_MAX_SECONDS": "1",
        "RECORDINGS_CONNECT_TIMEOUT": "1",
        "RECORDINGS_READ_TIMEOUT": "0.7",
        "RECORDINGS_MAX_ATTEMPTS": "3",
        "PROSAAS_SERVICE_BACKOFF": "0.2",
        "PROSAAS_SHUTDOWN_TIMEOUT": "5",
    }


WEBHOOK = "/webhooks/twilio/recording"


@pytest.fixture
def post_callback(client, stub) -> Callable[..., object]:
    """POST a signed recording callback through the Flask test client."""

    def _post(
        business_id: int,
        call_sid: str,
        recording_sid: str,
        *,
        status: str = "completed",
        url: str | None = None,
        query: str = "",
        signature: str | None = None,
        duration: str = "42",
    ):
        params = {
            "AccountSid": ACCOUNT,
            "CallSid": call_sid,
            "RecordingSid": recording_sid,
            "RecordingUrl": url or stub.url(business_id, recording_sid),
            "RecordingStatus": status,
            "RecordingDuration": duration,
        }
        path = WEBHOOK + (f"?{query}" if query else "")
        sig = sign(TOKEN, "http://localhost" + path, params) if signature is None else signature
        headers = {"X-Twilio-Signature": sig} if sig else {}
        return client.post(path, data=params, headers=headers)

    return _post


@pytest.fixture
def workers(env, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start `prosaas worker` processes (with extra env); all are killed at the end."""
    started: list[WorkerProcess] = []

    def _start(extra: dict[str, str] | None = None, *args: str) -> WorkerProcess:
        w = WorkerProcess(
            {**env, **(extra or {})}, *args, log_path=tmp_path / f"w{len(started)}.log"
        )
        started.append(w)
        return w

    yield _start
    for w in started:
        w.kill()
