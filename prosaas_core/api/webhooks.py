"""Twilio-signed webhooks: the URL a signature is checked against, and the start-up rule.

Twilio signs the URL it called. The URL Flask sees is built from the request's ``Host`` header,
which whoever sends the request chooses, so a plugin checks a signature against its public base
URL (``TWILIO_WEBHOOK_BASE_URL``, or the plugin's own setting) + path + query.

A plugin serving such a webhook calls `require_public_base_url` on its blueprint: when
``TWILIO_AUTH_TOKEN`` is set (signatures would be checked) but no public base URL is,
``create_app()``, and so ``prosaas serve``, refuses to start with one line saying what to set.
``TWILIO_WEBHOOK_TRUST_HOST=1`` is the development switch: signatures are checked against the
URL built from ``Host``. Without an auth token the webhooks answer 503 and are not a risk.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prosaas_core.errors import ConfigError

TRUST_HOST = "TWILIO_WEBHOOK_TRUST_HOST"
BASE_URL = "TWILIO_WEBHOOK_BASE_URL"
AUTH_TOKEN = "TWILIO_AUTH_TOKEN"

_TRUE = {"1", "true", "yes", "on"}


class WebhookConfigError(ConfigError):
    """A Twilio webhook would check signatures against a URL the caller chooses."""


def trust_host(settings: Any) -> bool:
    """Whether ``TWILIO_WEBHOOK_TRUST_HOST`` (development only) is on."""
    return (settings.get(TRUST_HOST) or "").strip().lower() in _TRUE


def public_base_problem(
    settings: Any, *, plugin: str, path: str, base_url: str | None, setting: str = BASE_URL
) -> str | None:
    """Why the webhook at `path` must not be served with these settings, or None."""
    if base_url or trust_host(settings) or not settings.get(AUTH_TOKEN):
        return None
    return (
        f"plugin {plugin!r} serves the Twilio webhook {path}, {AUTH_TOKEN} is set and {setting} "
        "is not: its signatures would be checked against the request's Host header. Set "
        f"{setting} to the public base URL Twilio calls (e.g. https://api.example.com), or "
        f"{TRUST_HOST}=1 in development"
    )


def require_public_base_url(
    bp: Any,
    *,
    plugin: str,
    path: str,
    base_url: Callable[[Any], str | None],
    setting: str = BASE_URL,
) -> None:
    """Make mounting `bp` fail (`WebhookConfigError`) in production without a public base URL.

    `base_url(settings)` is the plugin's configured public base URL (None when unset)."""

    def check(state: Any) -> None:
        rt = state.app.extensions.get("prosaas")
        if rt is None:
            return
        problem = public_base_problem(
            rt.settings, plugin=plugin, path=path, base_url=base_url(rt.settings), setting=setting
        )
        if problem:
            raise WebhookConfigError(problem)

    bp.record_once(check)


def signed_url(base_url: str | None) -> str:
    """The URL Twilio signed for this request: `base_url` + path + query, or (development
    switch only) the URL Flask saw; without either, 503 (start-up refuses this already: this
    is the second line of defence)."""
    from flask import request

    from prosaas_core.api.support import ApiError, current_runtime

    if not base_url:
        if not trust_host(current_runtime().settings):
            raise ApiError(
                503,
                "Webhook not configured",
                f"set {BASE_URL} (the public base URL Twilio calls)",
            )
        return request.url
    query = request.query_string.decode("latin-1")
    return base_url.rstrip("/") + request.path + (f"?{query}" if query else "")
