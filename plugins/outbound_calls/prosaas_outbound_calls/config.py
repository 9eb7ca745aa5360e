"""The plugin's settings, read from the environment through ``Settings.get``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prosaas_core.settings import Settings

EVENTS = ("initiated", "ringing", "answered", "completed")


@dataclass(frozen=True)
class OutboundConfig:
    """Every knob of the dialer, the callbacks and the API."""

    account_sid: str | None = None
    auth_token: str | None = None
    #: where the Twilio REST API lives (tests and the benchmark point it at a local server)
    api_base_url: str = "https://api.twilio.com"
    #: public base URL of prosaas, as Twilio reaches it: callbacks are built on it, and
    #: their signatures are checked against it
    webhook_base_url: str | None = None
    #: TwiML URL used when a campaign does not give one
    default_twiml_url: str | None = None
    #: region assumed for lead phones written without a country code
    default_region: str = "US"
    #: a business's caps unless `outbound-calls limits` set its own
    max_concurrent: int = 10
    max_calls_per_second: float = 5.0
    #: a live-call slot is freed after this long when no final callback ever comes; also the
    #: call's Twilio `time_limit` (minus the ring timeout) so no call outlives its slot
    slot_timeout: float = 3600.0
    ring_timeout: int = 30
    #: REST request timeout (connect and read)
    http_timeout: float = 10.0
    #: a claim with no call sid older than this is reconciled against the provider
    reconcile_after: float = 30.0
    #: slow timer of the dialer loop (release notices wake it sooner)
    poll_interval: float = 1.0
    #: how often each worker looks for stale claims, lost callbacks and finished campaigns
    sweep_interval: float = 5.0
    #: concurrent `calls.create` requests per worker
    dial_threads: int = 4
    #: the progress events Twilio is asked to call back with (``completed`` always comes)
    status_events: tuple[str, ...] = EVENTS

    @classmethod
    def from_settings(cls, settings: Settings) -> OutboundConfig:
        """Build from the prosaas ``Settings``; SettingError names a bad key."""
        s = settings
        http_timeout = s.get_duration("OUTBOUND_CALLS_HTTP_TIMEOUT", 10.0, minimum=0.1)
        events = s.get_list("OUTBOUND_CALLS_STATUS_EVENTS", EVENTS, choices=EVENTS)
        return cls(
            account_sid=s.get("TWILIO_ACCOUNT_SID"),
            auth_token=s.get("TWILIO_AUTH_TOKEN"),
            api_base_url=s.get("OUTBOUND_CALLS_TWILIO_API_URL") or "https://api.twilio.com",
            webhook_base_url=s.get("TWILIO_WEBHOOK_BASE_URL"),
            default_twiml_url=s.get("OUTBOUND_CALLS_TWIML_URL"),
            default_region=(s.get("OUTBOUND_CALLS_DEFAULT_REGION") or "US").upper(),
            max_concurrent=s.get_int("OUTBOUND_CALLS_MAX_CONCURRENT", 10, minimum=1),
            max_calls_per_second=s.get_float(
                "OUTBOUND_CALLS_MAX_CALLS_PER_SECOND", 5.0, minimum=0.01
            ),
            slot_timeout=s.get_duration("OUTBOUND_CALLS_SLOT_TIMEOUT", 3600.0, minimum=0.5),
            ring_timeout=s.get_int("OUTBOUND_CALLS_RING_TIMEOUT", 30, minimum=5),
            http_timeout=http_timeout,
            reconcile_after=s.get_duration(
                "OUTBOUND_CALLS_RECONCILE_AFTER", 3 * http_timeout, minimum=0.1
            ),
            poll_interval=s.get_duration("OUTBOUND_CALLS_POLL_INTERVAL", 1.0, minimum=0.01),
            sweep_interval=s.get_duration("OUTBOUND_CALLS_SWEEP_INTERVAL", 5.0, minimum=0.05),
            dial_threads=s.get_int("OUTBOUND_CALLS_DIAL_THREADS", 4, minimum=1),
            # "completed" always comes: the call's slot is freed on it
            status_events=tuple(dict.fromkeys((*events, "completed"))),
        )

    @property
    def time_limit(self) -> int | None:
        """Twilio's `time_limit` for a call: it ends before its slot can expire."""
        limit = int(self.slot_timeout) - self.ring_timeout
        return limit if limit >= 60 else None
