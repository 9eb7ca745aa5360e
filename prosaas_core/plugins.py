"""The plugin manager: loads the ``prosaas`` entry points, one at a time, and nothing else."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from importlib.metadata import entry_points

import pluggy

from prosaas_core import hookspecs

log = logging.getLogger("prosaas.plugins")

ENTRY_POINT_GROUP = "prosaas"


class PluginManager(pluggy.PluginManager):
    """pluggy's manager plus the record of plugins that failed to load or were disabled."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        #: entry point name -> one-line reason it was not loaded
        self.failures: dict[str, str] = {}
        #: entry point names blocked by PROSAAS_DISABLE_PLUGINS
        self.disabled: set[str] = set()


def get_plugin_manager(
    disable: Iterable[str] = (), *, load_entrypoints: bool = True
) -> PluginManager:
    """Build a fresh plugin manager.

    Each entry point of group ``prosaas`` is loaded on its own: one that fails to import, or
    that implements a hook prosaas does not specify (a typo), is logged by name, recorded in
    ``pm.failures`` and skipped, so one broken plugin never takes the program down. Tests pass
    ``load_entrypoints=False`` and register their own plugins with ``pm.register(obj, name=...)``.
    """
    pm = PluginManager()
    for name in disable:
        pm.set_blocked(name)
        pm.disabled.add(name)
    if load_entrypoints:
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if pm.is_blocked(ep.name):
                log.info("Plugin %r disabled by PROSAAS_DISABLE_PLUGINS", ep.name)
                continue
            _load_one(pm, ep.name)
    return pm


def _load_one(pm: PluginManager, name: str) -> None:
    try:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP, name=name)
        pm.check_pending()
    except Exception as exc:  # any import-time failure of third-party code
        plugin = pm.get_plugin(name)
        if plugin is not None:
            pm.unregister(plugin)
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        pm.failures[name] = reason
        log.error("Plugin %r failed to load and was skipped: %s", name, reason)


def plugin_distributions(pm: pluggy.PluginManager) -> dict[str, tuple[str, str]]:
    """Map each plugin name to its (distribution name, version), where it came from one."""
    out: dict[str, tuple[str, str]] = {}
    for plugin, dist in pm.list_plugin_distinfo():
        name = pm.get_name(plugin)
        if name is not None:
            out[name] = (dist.project_name, dist.version)
    return out
