"""Message providers: the contract (`Provider`, `Message`, the errors) and the registry.

A provider is a class with a ``name`` built once per process from the settings; plugins add
their own through the ``prosaas_broadcast_providers`` hook (see ``prosaas_broadcast.hookspecs``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from prosaas_broadcast.config import BroadcastConfig


@dataclass(frozen=True)
class Message:
    """One message to send: what a provider gets."""

    broadcast_id: int
    recipient_id: int
    business_id: int
    lead_id: int
    channel: str  # "sms" | "whatsapp"
    to: str  # E.164
    body: str

    @property
    def idempotency_key(self) -> str:
        """The same for every attempt at this recipient: ``<broadcast id>:<lead id>``."""
        return f"{self.broadcast_id}:{self.lead_id}"


class ProviderError(Exception):
    """The provider refused or could not take the message."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class PermanentError(ProviderError):
    """A 4xx the provider will answer again (bad number, blocked...): the recipient fails."""


class TransientError(ProviderError):
    """A 5xx or a connection refused before sending: retried with backoff. The provider did not
    take the message."""


class UncertainError(TransientError):
    """A timeout or a connection lost mid-request: the provider may have taken the message, so
    the recipient is checked (`Provider.reconcile`) before any new attempt."""


class RateLimited(ProviderError):
    """A 429: every sender of the business waits `retry_after` seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, code="429")
        self.retry_after = retry_after


class Provider:
    """Sends messages. Subclasses set `name` and implement `send`; `reconcile` says what to do
    with a recipient whose attempt ended without a recorded outcome (worker killed, timeout).

    `guarantee` is one line for the README/API: what one delivery per recipient rests on."""

    name: ClassVar[str] = ""
    guarantee: ClassVar[str] = ""

    def __init__(self, cfg: BroadcastConfig) -> None:
        self.cfg = cfg

    def check(self) -> None:
        """Raise ProviderError when the provider is not configured (before anything is sent)."""

    def status_callback(self, msg: Message) -> str | None:  # noqa: ARG002
        return None

    def send(self, msg: Message) -> str:
        """Send `msg`; the provider's message id. Raises a `ProviderError` subclass."""
        raise NotImplementedError

    def reconcile(self, msg: Message, since: datetime) -> str | None:  # noqa: ARG002
        """For a recipient left ``sending`` since `since`: the provider's message id when the
        provider already has the message (it is then recorded as sent, not sent again), or
        None when sending it (again) is safe. The default is only right for providers that
        deduplicate by `Message.idempotency_key` themselves."""
        return None


_lock = threading.Lock()
_cache: dict[tuple[int, str], Provider] = {}


def provider_classes(pm: Any) -> dict[str, type[Provider]]:
    """Every installed provider class by name (built-ins and other plugins')."""
    from prosaas_broadcast.hookspecs import ensure_hookspecs

    ensure_hookspecs(pm)
    out: dict[str, type[Provider]] = {}
    for result in pm.hook.prosaas_broadcast_providers():
        for cls in result or ():
            out[cls.name] = cls
    return out


def get_provider(pm: Any, name: str, cfg: BroadcastConfig) -> Provider:
    """The process's instance of provider `name` (KeyError when it is not installed)."""
    with _lock:
        key = (id(pm), name)
        if key not in _cache:
            _cache[key] = provider_classes(pm)[name](cfg)
        return _cache[key]
