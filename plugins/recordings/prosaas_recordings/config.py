"""The recordings plugin's settings, read once from the environment through the typed getters
of ``Settings`` (a bad value is a ``SettingError`` naming the key)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from prosaas_core.backoff import exponential

if TYPE_CHECKING:
    from prosaas_core.settings import Settings


#: download threads per worker process unless ``RECORDINGS_WORKER_THREADS`` says otherwise
DEFAULT_WORKER_THREADS = 16


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
    #: download threads per worker process (the per-worker global cap). A thread only waits on
    #: the network, and downloads only while it holds a business's slot: the slots bound what
    #: Twilio sees, so the threads should not. 16 lets two workers fill six businesses' 3 slots
    #: (8 could not: 2 x 8 < 18), at a few hundred KiB of memory each.
    worker_threads: int = DEFAULT_WORKER_THREADS
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
    def from_settings(cls, settings: Settings) -> RecordingsConfig:
        """Build from the prosaas ``Settings``; SettingError names a bad key."""
        s = settings
        return cls(
            account_sid=s.get("TWILIO_ACCOUNT_SID"),
            auth_token=s.get("TWILIO_AUTH_TOKEN"),
            webhook_base_url=s.get("TWILIO_WEBHOOK_BASE_URL"),
            recordings_dir=Path(s.get("RECORDINGS_DIR") or "recordings").absolute(),
            allowed_hosts=frozenset(
                h.lower() for h in s.get_list("RECORDINGS_ALLOWED_HOSTS", ("api.twilio.com",))
            ),
            allow_http=s.get_bool("RECORDINGS_ALLOW_HTTP"),
            slots_per_business=s.get_int("RECORDINGS_SLOTS_PER_BUSINESS", 3, minimum=1),
            worker_threads=s.get_int(
                "RECORDINGS_WORKER_THREADS", DEFAULT_WORKER_THREADS, minimum=1
            ),
            max_attempts=s.get_int("RECORDINGS_MAX_ATTEMPTS", 5, minimum=1),
            retry_base=s.get_duration("RECORDINGS_RETRY_BASE_SECONDS", 10.0, minimum=0),
            retry_max=s.get_duration("RECORDINGS_RETRY_MAX_SECONDS", 600.0, minimum=0),
            lease_seconds=s.get_duration("RECORDINGS_LEASE_SECONDS", 30.0, minimum=0.5),
            poll_interval=s.get_duration("RECORDINGS_POLL_INTERVAL", 1.0, minimum=0.01),
            connect_timeout=s.get_duration("RECORDINGS_CONNECT_TIMEOUT", 10.0, minimum=0.1),
            read_timeout=s.get_duration("RECORDINGS_READ_TIMEOUT", 30.0, minimum=0.1),
            download_timeout=s.get_duration("RECORDINGS_DOWNLOAD_TIMEOUT", 600.0, minimum=0.1),
            max_bytes=s.get_int("RECORDINGS_MAX_BYTES", 200 * 1024 * 1024, minimum=1),
            retention_days=s.get_float("RECORDINGS_RETENTION_DAYS", 0.0, minimum=0),
        )

    def retry_delay(self, attempt: int) -> float:
        """Exponential backoff after failed attempt number `attempt` (1-based)."""
        return exponential(attempt, self.retry_base, self.retry_max)

    def call_path(self, business_id: int, call_sid: str) -> Path:
        """Where a call's recording lives: ``RECORDINGS_DIR/<business>/<CallSid>.mp3``."""
        return self.recordings_dir / str(business_id) / f"{call_sid}.mp3"

    @property
    def partial_dir(self) -> Path:
        """Temporary files, on the same filesystem so the final rename is atomic."""
        return self.recordings_dir / ".partial"
