"""The plugin's settings, read once from the environment through the typed getters of
``Settings`` (``get_int``, ``get_duration``, ...).

A bad value fails loudly with the key's name: a worker must not start sending at a rate nobody
configured.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from prosaas_core.backoff import exponential
from prosaas_core.errors import ConfigError, SettingError
from prosaas_core.limits import Rate, parse_rate

if TYPE_CHECKING:
    from prosaas_core.settings import Settings

DEFAULT_RATE = "10/s"


def _text(settings: Settings, key: str, default: str = "") -> str:
    return (settings.get(key) or default).strip()


@dataclass(frozen=True)
class BroadcastConfig:
    """Every ``BROADCAST_*`` setting (see the plugin README)."""

    #: messages per second per business, across every worker (``BROADCAST_RATE``)
    rate: Rate
    default_provider: str
    default_region: str
    max_attempts: int
    retry_base: float
    retry_max: float
    #: a recipient left ``sending`` this long is checked and taken over (a dead worker's)
    sending_stale: float
    #: recipients per part: a broadcast of more is split into parts other workers pick up
    part_size: int
    max_parts: int
    #: sending threads in each part job (overlap the provider's latency; the rate is shared)
    sender_threads: int
    http_timeout: float
    webhook_url: str
    webhook_secret: str
    twilio_account_sid: str
    twilio_auth_token: str
    twilio_api_base: str
    twilio_from: str
    twilio_whatsapp_from: str
    #: the public base URL Twilio calls back (status callbacks are signed against it)
    public_base_url: str

    @classmethod
    def from_settings(cls, settings: Settings) -> BroadcastConfig:
        """Build from the prosaas ``Settings``; SettingError names a bad key."""
        s = settings
        raw_rate = _text(s, "BROADCAST_RATE", DEFAULT_RATE)
        try:
            rate = parse_rate(raw_rate if "/" in raw_rate else f"{raw_rate}/s")
        except ConfigError:
            raise SettingError("BROADCAST_RATE", raw_rate, "a rate: N, N/s, N/min or N/h") from None
        timeout = s.get_duration("BROADCAST_HTTP_TIMEOUT", 10.0, minimum=0.05, maximum=120)
        stale_key = "BROADCAST_SENDING_STALE_SECONDS"
        stale = s.get_duration(stale_key, 60.0, minimum=0.5, maximum=86400)
        if stale < 2 * timeout:
            # a live sender's call always ends (timeout) before anyone may take its recipient
            raise SettingError(
                stale_key, s.get(stale_key), f"at least twice BROADCAST_HTTP_TIMEOUT ({timeout:g})"
            )
        return cls(
            rate=rate,
            default_provider=_text(s, "BROADCAST_PROVIDER", "log"),
            default_region=(
                _text(s, "BROADCAST_DEFAULT_REGION") or _text(s, "PROSAAS_PHONE_REGION", "US")
            ).upper(),
            max_attempts=s.get_int("BROADCAST_MAX_ATTEMPTS", 5, minimum=1, maximum=100),
            retry_base=s.get_duration(
                "BROADCAST_RETRY_BASE_SECONDS", 2.0, minimum=0.0, maximum=3600
            ),
            retry_max=s.get_duration(
                "BROADCAST_RETRY_MAX_SECONDS", 300.0, minimum=0.0, maximum=86400
            ),
            sending_stale=stale,
            part_size=s.get_int("BROADCAST_PART_SIZE", 500, minimum=1, maximum=1_000_000),
            max_parts=s.get_int("BROADCAST_MAX_PARTS", 8, minimum=1, maximum=256),
            sender_threads=s.get_int("BROADCAST_SENDER_THREADS", 2, minimum=1, maximum=32),
            http_timeout=timeout,
            webhook_url=_text(s, "BROADCAST_WEBHOOK_URL"),
            webhook_secret=_text(s, "BROADCAST_WEBHOOK_SECRET"),
            twilio_account_sid=_text(s, "TWILIO_ACCOUNT_SID"),
            twilio_auth_token=_text(s, "TWILIO_AUTH_TOKEN"),
            twilio_api_base=_text(s, "BROADCAST_TWILIO_API_BASE", "https://api.twilio.com"),
            twilio_from=_text(s, "BROADCAST_TWILIO_FROM"),
            twilio_whatsapp_from=_text(s, "BROADCAST_TWILIO_WHATSAPP_FROM"),
            public_base_url=_text(s, "BROADCAST_PUBLIC_BASE_URL")
            or _text(s, "TWILIO_WEBHOOK_BASE_URL"),
        )

    def business_rate(self) -> Rate:
        return self.rate

    def effective_rate(self, per_broadcast: float | None) -> Rate:
        """The broadcast's own rate, never above the business's."""
        if per_broadcast is None or per_broadcast >= self.rate.per_second:
            return self.rate
        return rate_of(per_broadcast)


def rate_of(per_second: float) -> Rate:
    """A `Rate` of `per_second` messages per second (fractions become per minute or hour)."""
    if per_second >= 1 and float(per_second).is_integer():
        return parse_rate(f"{int(per_second)}/s")
    per_hour = max(1, round(per_second * 3600))
    return parse_rate(f"{per_hour}/h")


def retry_delay(cfg: BroadcastConfig, attempts: int) -> float:
    """Exponential backoff for a recipient's next attempt after `attempts` failed ones."""
    return exponential(attempts, cfg.retry_base, cfg.retry_max)
