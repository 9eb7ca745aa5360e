"""The plugin manager: loads the ``prosaas`` entry points one at a time, checks that each one
fits this core, and calls their hooks through one caller (`call_hook`).

The policy for a plugin that does not work is written once, in ``prosaas_core.hookspecs``' module
docstring (and ``docs/hooks.md``): it is *rejected* (unregistered for the rest of the process,
listed by ``prosaas plugins`` with the reason, logged once) and everything else keeps working.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Literal

import pluggy

from prosaas_core import hookspecs
from prosaas_core.errors import PluginError
from prosaas_core.version import CONTRACT_VERSION, __version__

log = logging.getLogger("prosaas.plugins")

ENTRY_POINT_GROUP = "prosaas"
CORE_DISTRIBUTION = "prosaas"


@dataclass(frozen=True)
class Incompatible:
    """A plugin left unloaded because it needs another core or contract version."""

    name: str
    distribution: str | None
    version: str | None
    reason: str


class PluginHookError(PluginError):
    """A plugin's hook implementation raised (or returned something that is not iterable)."""

    def __init__(self, plugin: str, hook: str, exc: BaseException) -> None:
        super().__init__(f"plugin {plugin!r}: {hook}() raised {type(exc).__name__}: {exc}")
        self.plugin, self.hook = plugin, hook


class PluginManager(pluggy.PluginManager):
    """pluggy's manager plus the record of plugins that were not loaded, and why."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        #: plugin name -> one-line reason it failed (import error, unknown hook, raising hook)
        self.failures: dict[str, str] = {}
        #: plugin name -> the core/contract requirement this core does not meet
        self.incompatible: dict[str, Incompatible] = {}
        #: entry point names blocked by PROSAAS_DISABLE_PLUGINS
        self.disabled: set[str] = set()
        #: hook name -> results of `collect` (blueprints are gathered once per manager)
        self._collected: dict[str, list[tuple[str, list[Any]]]] = {}

    def register(self, plugin: object, name: str | None = None) -> str | None:
        self._collected.clear()
        return super().register(plugin, name)

    def unregister(self, plugin: object = None, name: str | None = None) -> Any:
        self._collected.clear()
        return super().unregister(plugin, name)


def get_plugin_manager(
    disable: Iterable[str] = (), *, load_entrypoints: bool = True
) -> PluginManager:
    """Build a fresh plugin manager.

    Each entry point of group ``prosaas`` is loaded on its own. One whose distribution requires
    another prosaas version, or whose module declares a ``PROSAAS_CONTRACT`` this core does not
    provide, is left unloaded and recorded in ``pm.incompatible``; one that fails to import is
    recorded in ``pm.failures``; both are logged by name once and skipped, so one bad plugin
    never takes the program down. Once all are loaded (so a plugin may implement a hook another
    plugin adds through ``prosaas_addhooks``), a plugin implementing a hook nobody specifies (a
    typo) is rejected the same way. Tests pass ``load_entrypoints=False`` and register their
    own plugins with ``pm.register(obj, name=...)``.
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
            reason = requirement_problem(ep)  # before importing: its imports may not exist here
            if reason is not None:
                _incompatible(pm, ep, reason)
                continue
            try:
                pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP, name=ep.name)
            except Exception as exc:  # any import-time failure of third-party code
                reject(pm, ep.name, f"{type(exc).__name__}: {exc}")
                continue
            reason = contract_problem(pm.get_plugin(ep.name))
            if reason is not None:
                _incompatible(pm, ep, reason)
        _reject_unspecified_hooks(pm)
    return pm


def requirement_problem(ep: EntryPoint) -> str | None:
    """Why the entry point's distribution cannot run on this core (its ``prosaas`` requirement
    excludes ``__version__``), or None."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    dist = getattr(ep, "dist", None)
    for raw in (dist.requires or []) if dist is not None else []:
        try:
            req = Requirement(raw)
        except InvalidRequirement:
            continue
        if canonicalize_name(req.name) != CORE_DISTRIBUTION:
            continue
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        if req.specifier and not req.specifier.contains(__version__, prereleases=True):
            return f"requires prosaas{req.specifier}, but prosaas {__version__} is installed"
    return None


def contract_problem(module: object) -> str | None:
    """Why the plugin module's ``PROSAAS_CONTRACT`` excludes this core's contract, or None."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    wanted = getattr(module, "PROSAAS_CONTRACT", None)
    if wanted is None:
        return None
    try:
        spec = SpecifierSet(str(wanted))
    except InvalidSpecifier:
        return f"PROSAAS_CONTRACT {wanted!r} is not a version specifier (e.g. '>=1,<2')"
    if not spec.contains(CONTRACT_VERSION, prereleases=True):
        return (
            f"needs plugin contract {spec}, but prosaas {__version__} provides contract "
            f"{CONTRACT_VERSION}"
        )
    return None


def _incompatible(pm: PluginManager, ep: EntryPoint, reason: str) -> None:
    plugin = pm.get_plugin(ep.name)
    if plugin is not None:
        pm.unregister(plugin)
    dist = getattr(ep, "dist", None)
    pm.incompatible[ep.name] = Incompatible(
        ep.name,
        dist.metadata["Name"] if dist is not None else None,
        dist.version if dist is not None else None,
        reason,
    )
    log.error("Plugin %r is incompatible and was not loaded: %s", ep.name, reason)


def _reject_unspecified_hooks(pm: PluginManager) -> None:
    while True:
        try:
            pm.check_pending()
            return
        except pluggy.PluginValidationError as exc:
            name = pm.get_name(exc.plugin) or repr(exc.plugin)
            reject(pm, name, f"{type(exc).__name__}: {exc}")


def reject(pm: pluggy.PluginManager, name: str, reason: str) -> None:
    """Take plugin `name` out of this process: unregistered, its reason recorded (``prosaas
    plugins`` lists it as failed) and logged once."""
    plugin = pm.get_plugin(name)
    if plugin is not None:
        pm.unregister(plugin)
    reason = reason.splitlines()[0] if reason else "failed"
    failures = getattr(pm, "failures", None)
    if failures is not None:
        failures[name] = reason
    log.error("Plugin %r failed to load and was skipped: %s", name, reason)


def call_hook(
    pm: pluggy.PluginManager,
    hook_name: str,
    *,
    on_error: Literal["reject", "raise"] = "reject",
    **kwargs: Any,
) -> list[tuple[str, list[Any]]]:
    """Call hook `hook_name` plugin by plugin: ``[(plugin name, its results as a list)]``.

    The one place prosaas calls a plugin's hook implementation, so every result is attributed
    to its plugin and a failure is handled one way. A plugin whose implementation raises, or
    returns something that is not iterable, is rejected (see `reject`) and left out of the
    answer; ``on_error="raise"`` raises `PluginHookError` instead (`build_registry` and the
    tests that check a single plugin use it).
    """
    out: list[tuple[str, list[Any]]] = []
    for impl in list(getattr(pm.hook, hook_name).get_hookimpls()):
        name = impl.plugin_name
        try:
            result = impl.function(**{arg: kwargs[arg] for arg in impl.argnames})
            items = [] if result is None else list(result)
        except Exception as exc:
            error = PluginHookError(name, hook_name, exc)
            if on_error == "raise":
                raise error from exc
            reject(pm, name, f"{hook_name}() raised {type(exc).__name__}: {exc}")
            continue
        out.append((name, items))  # in registration order: a clash names the first one first
    return out


def collect(pm: PluginManager, hook_name: str) -> list[tuple[str, list[Any]]]:
    """`call_hook` once per manager: the results are kept until a plugin is (un)registered, so
    ``create_app`` and ``prosaas plugins`` share one collection (blueprints)."""
    if hook_name not in pm._collected:
        pm._collected[hook_name] = call_hook(pm, hook_name)
    return pm._collected[hook_name]


def plugin_blueprints(pm: PluginManager) -> dict[str, list[Any]]:
    """Each plugin's Flask blueprints, by plugin name (plugins import Flask: call it inside
    commands). A plugin whose ``prosaas_blueprints`` raises is rejected."""
    out: dict[str, list[Any]] = {}
    for plugin, items in collect(pm, "prosaas_blueprints"):
        out.setdefault(plugin, []).extend(items)
    return out


def plugin_distributions(pm: pluggy.PluginManager) -> dict[str, tuple[str, str]]:
    """Map each plugin name to its (distribution name, version), where it came from one."""
    out: dict[str, tuple[str, str]] = {}
    for plugin, dist in pm.list_plugin_distinfo():
        name = pm.get_name(plugin)
        if name is not None:
            out[name] = (dist.project_name, dist.version)
    return out


def versions(pm: PluginManager) -> dict[str, Any]:
    """The core version, the contract version and each loaded plugin's version (``prosaas
    --version``, ``prosaas plugins --json``, operators' ``/readyz``)."""
    dists = plugin_distributions(pm)
    loaded = sorted(n for n, p in pm.list_name_plugin() if p is not None)
    return {
        "prosaas": __version__,
        "contract": CONTRACT_VERSION,
        "plugins": {name: dists.get(name, (None, None))[1] for name in loaded},
        "incompatible": {name: i.reason for name, i in sorted(pm.incompatible.items())},
    }
