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

    Each entry point of group ``prosaas`` is loaded on its own: one that fails to import is
    logged by name, recorded in ``pm.failures`` and skipped, so one broken plugin never takes
    the program down. Once all are loaded (so a plugin may implement a hook another plugin
    adds through ``prosaas_addhooks``), a plugin implementing a hook nobody specifies (a typo)
    is rejected the same way. Tests pass ``load_entrypoints=False`` and register their own
    plugins with ``pm.register(obj, name=...)``.
    """
    pm = PluginManager()
    pm.hook.prosaas_addhooks.call_historic(kwargs={"pm": pm})
    for name in disable:
        pm.set_blocked(name)
        pm.disabled.add(name)
    if load_entrypoints:
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if pm.is_blocked(ep.name):
                log.info("Plugin %r disabled by PROSAAS_DISABLE_PLUGINS", ep.name)
                continue
            try:
                pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP, name=ep.name)
            except Exception as exc:  # any import-time failure of third-party code
                _reject(pm, ep.name, exc)
        _reject_unspecified_hooks(pm)
    return pm


def _reject_unspecified_hooks(pm: PluginManager) -> None:
    while True:
        try:
            pm.check_pending()
            return
        except pluggy.PluginValidationError as exc:
            _reject(pm, pm.get_name(exc.plugin) or repr(exc.plugin), exc)


def _reject(pm: PluginManager, name: str, exc: Exception) -> None:
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
