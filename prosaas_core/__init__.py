"""prosaas: plugin-based background jobs for multi-tenant SaaS backends.

The public surface a plugin imports: ``hookimpl``, ``JobType``, ``Schedule``, ``Service``,
``JobContext``, ``ServiceContext`` and ``prosaas_core.limits``; an application: ``create_app``,
``enqueue``, ``Runtime``, ``Settings``.
"""

from __future__ import annotations

from typing import Any

from prosaas_core.hookspecs import hookimpl
from prosaas_core.registry import JobType, Schedule, Service
from prosaas_core.runtime import Runtime
from prosaas_core.settings import Settings
from prosaas_core.version import CONTRACT_VERSION, __version__

__all__ = [
    "__version__",
    "CONTRACT_VERSION",
    "hookimpl",
    "JobType",
    "Schedule",
    "Service",
    "JobContext",
    "ServiceContext",
    "Runtime",
    "Settings",
    "create_app",
    "enqueue",
]

# Heavier pieces (Flask, SQLAlchemy, RQ) load on first use so `prosaas --help` stays fast.
_LAZY = {
    "create_app": "prosaas_core.api.app",
    "enqueue": "prosaas_core.jobs.enqueue",
    "JobContext": "prosaas_core.jobs.context",
    "ServiceContext": "prosaas_core.services",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'prosaas_core' has no attribute {name!r}")
