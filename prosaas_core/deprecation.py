"""Deprecations: a public name that is going away warns once per process, with the version
that removes it, before it goes (``docs/hooks.md``, "Public names and their stability").

``deprecated("JobType(retries=...)", removed_in="2.0", instead="max_attempts")`` issues a
``DeprecationWarning`` through `warnings` (pytest shows it; ``-W error::DeprecationWarning``
makes a plugin's test suite fail on it) and logs ``DEPRECATED: ...`` at WARNING on
``prosaas.deprecation``, so it is in every worker's and server's log, where operators look.
"""

from __future__ import annotations

import logging
import threading
import warnings

log = logging.getLogger("prosaas.deprecation")

_lock = threading.Lock()
_warned: set[str] = set()


def deprecated(
    what: str, *, removed_in: str, instead: str | None = None, stacklevel: int = 2
) -> None:
    """Warn, once per process for each `what`, that it is removed in prosaas `removed_in`."""
    with _lock:
        if what in _warned:
            return
        _warned.add(what)
    message = f"{what} is deprecated and will be removed in prosaas {removed_in}"
    if instead:
        message += f"; use {instead} instead"
    warnings.warn(message, DeprecationWarning, stacklevel=stacklevel + 1)
    log.warning("DEPRECATED: %s", message)
