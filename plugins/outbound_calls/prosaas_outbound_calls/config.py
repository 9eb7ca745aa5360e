"""The plugin's settings, read from the environment through ``Settings.get``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class OutboundConfigError(ValueError):
    """An OUTBOUND_CALLS_* or TWILIO_* setting is malformed."""


def _num(settings: Any, key: str, default: float, *, minimum: float = 0.0) -> float:
    raw = settings.get(key)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise OutboundConfigError(f"{key} must be a number, got {raw!r}") from None
    if value < minimum:
        raise OutboundConfigError(f"{key} must be at least {minimum:g}, got {raw!r}")
    return value


EVENTS = ("initiated", "ringing", "answered", "completed")


def _events(raw: str | None) -> tuple[str, ...]:
    if raw is None:
        return EVENTS
    events = tuple(e.strip() for e in raw.split(",") if e.strip())
    unknown = sorted(set(events) - set(EVENTS))
    if unknown:
        raise OutboundConfigError(
            f"OUTBOUND_CALLS_STATUS_EVENTS: unknown {', '.join(unknown)}; use {','.join(EVENTS)}"
        )
    return tuple(dict.fromkeys((*events, "completed")))


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
    def from_settings(cls, settings: Any) -> OutboundConfig:
        """Build from a prosaas ``Settings`` (anything with ``get(key)``)."""
        http_timeout = _num(settings, "OUTBOUND_CALLS_HTTP_TIMEOUT", 10.0, minimum=0.1)
        return cls(
            account_sid=settings.get("TWILIO_ACCOUNT_SID"),
            auth_token=settings.get("TWILIO_AUTH_TOKEN"),
            api_base_url=settings.get("OUTBOUND_CALLS_TWILIO_API_URL", "https://api.twilio.com"),
            webhook_base_url=settings.get("TWILIO_WEBHOOK_BASE_URL"),
            default_twiml_url=settings.get("OUTBOUND_CALLS_TWIML_URL"),
            default_region=(settings.get("OUTBOUND_CALLS_DEFAULT_REGION") or "US").upper(),
            max_concurrent=int(_num(settings, "OUTBOUND_CALLS_MAX_CONCURRENT", 10, minimum=1)),
            max_calls_per_second=_num(
                settings, "OUTBOUND_CALLS_MAX_CALLS_PER_SECOND", 5.0, minimum=0.01
            ),
            slot_timeout=_num(settings, "OUTBOUND_CALLS_SLOT_TIMEOUT", 3600.0, minimum=0.5),
            ring_timeout=int(_num(settings, "OUTBOUND_CALLS_RING_TIMEOUT", 30, minimum=5)),
            http_timeout=http_timeout,
            reconcile_after=_num(
                settings, "OUTBOUND_CALLS_RECONCILE_AFTER", 3 * http_timeout, minimum=0.1
            ),
            poll_interval=_num(settings, "OUTBOUND_CALLS_POLL_INTERVAL", 1.0, minimum=0.01),
            sweep_interval=_num(settings, "OUTBOUND_CALLS_SWEEP_INTERVAL", 5.0, minimum=0.05),
            dial_threads=int(_num(settings, "OUTBOUND_CALLS_DIAL_THREADS", 4, minimum=1)),
            status_events=_events(settings.get("OUTBOUND_CALLS_STATUS_EVENTS")),
        )

    @property
    def time_limit(self) -> int | None:
        """Twilio's `time_limit` for a call: it ends before its slot can expire."""
        limit = int(self.slot_timeout) - self.ring_timeout
        return limit if limit >= 60 else None
