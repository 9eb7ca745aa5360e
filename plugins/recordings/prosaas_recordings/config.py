"""The recordings plugin's settings, read from the environment through ``Settings.get``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


class RecordingsConfigError(ValueError):
    """A RECORDINGS_* or TWILIO_* setting is malformed."""


def _num(settings: Any, key: str, default: float, *, minimum: float = 0.0) -> float:
    raw = settings.get(key)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise RecordingsConfigError(f"{key} must be a number, got {raw!r}") from None
    if value < minimum:
        raise RecordingsConfigError(f"{key} must be at least {minimum}, got {raw!r}")
    return value


def _flag(settings: Any, key: str) -> bool:
    return (settings.get(key) or "").strip().lower() in {"1", "true", "yes", "on"}


def _hosts(raw: str) -> frozenset[str]:
    return frozenset(h.strip().lower() for h in raw.split(",") if h.strip())


@dataclass(frozen=True)
class RecordingsConfig:
    """Every knob of the webhook, the downloader and the worker service."""

    account_sid: str | None = None
    auth_token: str | None = None
    #: public base URL Twilio calls (e.g. ``https://api.example.com``) when behind a proxy:
    #: the signature is validated against it instead of the URL Flask sees
    webhook_base_url: str | None = None
    recordings_dir: Path = Path("recordings")
    #: hosts (``name`` or ``name:port``) recordings may be downloaded from
    allowed_hosts: frozenset[str] = frozenset({"api.twilio.com"})
    #: plain http is refused unless set (credentials travel in basic auth)
    allow_http: bool = False
    slots_per_business: int = 3
    #: download threads per worker process (the per-worker global cap)
    worker_threads: int = 8
    max_attempts: int = 5
    retry_base: float = 10.0
    retry_max: float = 600.0
    #: task lease and slot lease, seconds; renewed every third of it while downloading
    lease_seconds: float = 30.0
    poll_interval: float = 1.0
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    #: whole-download deadline, seconds
    download_timeout: float = 600.0
    max_bytes: int = 200 * 1024 * 1024
    #: recordings older than this many days are deleted by the nightly retention schedule
    #: (0: kept forever)
    retention_days: float = 0.0

    @classmethod
    def from_settings(cls, settings: Any) -> RecordingsConfig:
        """Build from a prosaas ``Settings`` (anything with ``get(key)``)."""
        return cls(
            account_sid=settings.get("TWILIO_ACCOUNT_SID"),
            auth_token=settings.get("TWILIO_AUTH_TOKEN"),
            webhook_base_url=settings.get("TWILIO_WEBHOOK_BASE_URL"),
            recordings_dir=Path(settings.get("RECORDINGS_DIR", "recordings")).absolute(),
            allowed_hosts=_hosts(settings.get("RECORDINGS_ALLOWED_HOSTS", "api.twilio.com")),
            allow_http=_flag(settings, "RECORDINGS_ALLOW_HTTP"),
            slots_per_business=int(_num(settings, "RECORDINGS_SLOTS_PER_BUSINESS", 3, minimum=1)),
            worker_threads=int(_num(settings, "RECORDINGS_WORKER_THREADS", 8, minimum=1)),
            max_attempts=int(_num(settings, "RECORDINGS_MAX_ATTEMPTS", 5, minimum=1)),
            retry_base=_num(settings, "RECORDINGS_RETRY_BASE_SECONDS", 10.0),
            retry_max=_num(settings, "RECORDINGS_RETRY_MAX_SECONDS", 600.0),
            lease_seconds=_num(settings, "RECORDINGS_LEASE_SECONDS", 30.0, minimum=0.5),
            poll_interval=_num(settings, "RECORDINGS_POLL_INTERVAL", 1.0, minimum=0.01),
            connect_timeout=_num(settings, "RECORDINGS_CONNECT_TIMEOUT", 10.0, minimum=0.1),
            read_timeout=_num(settings, "RECORDINGS_READ_TIMEOUT", 30.0, minimum=0.1),
            download_timeout=_num(settings, "RECORDINGS_DOWNLOAD_TIMEOUT", 600.0, minimum=0.1),
            max_bytes=int(_num(settings, "RECORDINGS_MAX_BYTES", 200 * 1024 * 1024, minimum=1)),
            retention_days=_num(settings, "RECORDINGS_RETENTION_DAYS", 0.0),
        )

    def retry_delay(self, attempt: int) -> float:
        """Exponential backoff after failed attempt number `attempt` (1-based)."""
        return min(self.retry_max, self.retry_base * 2 ** max(0, attempt - 1))

    def call_path(self, business_id: int, call_sid: str) -> Path:
        """Where a call's recording lives: ``RECORDINGS_DIR/<business>/<CallSid>.mp3``."""
        return self.recordings_dir / str(business_id) / f"{call_sid}.mp3"

    @property
    def partial_dir(self) -> Path:
        """Temporary files, on the same filesystem so the final rename is atomic."""
        return self.recordings_dir / ".partial"
