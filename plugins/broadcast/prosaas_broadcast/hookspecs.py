# mypy: disable-error-code="empty-body"
# (hookspecs are signatures with docstrings; pluggy calls the implementations)
"""The hook the broadcast plugin adds to prosaas: message providers.

A provider plugin implements it::

    from prosaas_core import hookimpl
    from prosaas_broadcast.providers import Provider, PermanentError, TransientError

    class Acme(Provider):
        name = "acme"
        guarantee = "at most once: Acme deduplicates by Idempotency-Key"

        def send(self, msg):
            ...  # return the provider's message id, or raise one of the errors

    @hookimpl
    def prosaas_broadcast_providers():
        return [Acme]

The broadcast plugin adds the specification through ``prosaas_addhooks``, so the implementing
plugin loads whatever the order of entry points.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("prosaas")


@hookspec
def prosaas_broadcast_providers() -> Iterable[Any]:
    """Return provider classes (subclasses of ``prosaas_broadcast.providers.Provider``), each
    with a unique ``name``. Each is built once per process with the plugin's settings; its
    ``send(message)`` returns the provider's message id or raises ``PermanentError`` (the
    recipient fails), ``TransientError`` (retried with backoff), ``UncertainError`` (checked
    with ``reconcile`` before a retry) or ``RateLimited`` (the whole business waits)."""


def ensure_hookspecs(pm: pluggy.PluginManager) -> None:
    """Add this module's hookspecs to `pm` once (idempotent)."""
    hook = getattr(pm.hook, "prosaas_broadcast_providers", None)
    if hook is None or hook.spec is None:
        pm.add_hookspecs(sys.modules[__name__])
