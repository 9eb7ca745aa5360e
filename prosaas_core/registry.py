"""Job types and services, and the registry the installed plugins build from them."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import KW_ONLY, dataclass, field
from typing import TYPE_CHECKING, Any

from prosaas_core.errors import DuplicateJobTypeError, PluginError

if TYPE_CHECKING:
    import pluggy
    from pydantic import BaseModel

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
QUEUE_RE = re.compile(r"^[a-z][a-z0-9_\-]{0,62}$")


@dataclass(frozen=True)
class JobType:
    """A kind of background job: its name (the value stored in ``background_jobs.job_type``),
    the handler that runs it and how it is run."""

    name: str
    handler: Callable[[Any], Any]
    _: KW_ONLY
    queue: str = "default"
    payload_model: type[BaseModel] | None = None
    description: str = ""
    max_attempts: int = 3
    timeout: float | None = None
    unique_per_business: bool = False
    #: jobs of this type running at once per business, across all workers (None: no limit)
    concurrency_per_business: int | None = None
    #: starts per business, ``"N/s"``, ``"N/min"`` or ``"N/h"`` (None: no limit)
    rate_per_business: str | None = None

    def __post_init__(self) -> None:
        name = self.name
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise PluginError(f"invalid job type name {name!r}: must match {NAME_RE.pattern}")
        if not callable(self.handler):
            raise PluginError(f"job type {name!r}: handler is not callable")
        if not isinstance(self.queue, str) or not QUEUE_RE.match(self.queue):
            raise PluginError(f"job type {name!r}: invalid queue name {self.queue!r}")
        if self.payload_model is not None and not hasattr(self.payload_model, "model_validate"):
            raise PluginError(f"job type {name!r}: payload_model must be a pydantic v2 model")
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise PluginError(f"job type {name!r}: max_attempts must be a positive integer")
        if self.timeout is not None and self.timeout <= 0:
            raise PluginError(f"job type {name!r}: timeout must be positive")
        conc = self.concurrency_per_business
        if conc is not None and (not isinstance(conc, int) or isinstance(conc, bool) or conc < 1):
            raise PluginError(f"job type {name!r}: concurrency_per_business must be an int >= 1")
        if self.rate_per_business is not None:
            from prosaas_core.errors import ConfigError
            from prosaas_core.limits import parse_rate

            try:
                parse_rate(self.rate_per_business)
            except ConfigError as exc:
                raise PluginError(f"job type {name!r}: rate_per_business: {exc}") from None

    @property
    def limited(self) -> bool:
        """Whether the type declares a per-business limit (overrides may add one later)."""
        return self.concurrency_per_business is not None or self.rate_per_business is not None


@dataclass(frozen=True)
class Service:
    """A loop every worker runs: ``run(ctx)`` returns once ``ctx.stop_event`` is set."""

    name: str
    run: Callable[[Any], None]
    _: KW_ONLY
    #: optional ``pending(ctx) -> int``: work waiting for this service, so ``prosaas doctor``
    #: can report pending work that no live worker is consuming
    pending: Callable[[Any], int] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not QUEUE_RE.match(self.name):
            raise PluginError(f"invalid service name {self.name!r}")
        if not callable(self.run):
            raise PluginError(f"service {self.name!r}: run is not callable")


CATCH_UP = ("skip", "once", "all")


@dataclass(frozen=True)
class Schedule:
    """A cron schedule a plugin contributes: every occurrence enqueues `job_type` with
    `payload`, once per active business when `per_business` (plugin schedules must be: every
    job belongs to a business). `timezone` is an IANA name; `catch_up` says what happens to
    occurrences missed while no worker ran: "skip" them, fire "once", or fire "all" (capped);
    `jitter` spreads each occurrence's jobs over that many seconds."""

    name: str
    _: KW_ONLY
    cron: str
    job_type: str
    payload: dict[str, Any] | None = None
    per_business: bool = False
    timezone: str = "UTC"
    catch_up: str = "skip"
    jitter: float = 0.0

    def __post_init__(self) -> None:
        from prosaas_core.errors import TimingError
        from prosaas_core.schedules import check_definition

        if not isinstance(self.name, str) or not SCHEDULE_RE.match(self.name):
            raise PluginError(f"invalid schedule name {self.name!r}: {SCHEDULE_RE.pattern}")
        try:
            check_definition(self.cron, self.timezone, self.catch_up, self.jitter)
        except TimingError as exc:
            raise PluginError(f"schedule {self.name!r}: {exc}") from None
        if self.payload is not None and not isinstance(self.payload, dict):
            raise PluginError(f"schedule {self.name!r}: payload must be a dict or None")


SCHEDULE_RE = re.compile(r"^[a-z][a-z0-9_.\-]{0,99}$")


@dataclass
class Registry:
    """What the installed plugins contribute, with the plugin that contributed each piece."""

    job_types: dict[str, JobType] = field(default_factory=dict)
    job_type_owner: dict[str, str] = field(default_factory=dict)
    services: dict[str, Service] = field(default_factory=dict)
    service_owner: dict[str, str] = field(default_factory=dict)
    migrations: dict[str, list[str]] = field(default_factory=dict)
    schedules: dict[str, Schedule] = field(default_factory=dict)
    schedule_owner: dict[str, str] = field(default_factory=dict)

    @property
    def queues(self) -> list[str]:
        """Every queue an installed job type uses, sorted."""
        return sorted({jt.queue for jt in self.job_types.values()})

    def job_type(self, name: str) -> JobType:
        from prosaas_core.errors import UnknownJobTypeError

        try:
            return self.job_types[name]
        except KeyError:
            raise UnknownJobTypeError(name, list(self.job_types)) from None

    def migration_dirs(self) -> list[str]:
        return [path for paths in self.migrations.values() for path in paths]


class _PluginFault(PluginError):
    """One plugin's contribution is malformed (raised while building; carries the plugin)."""

    def __init__(self, plugin: str, message: str) -> None:
        super().__init__(message)
        self.plugin = plugin


def _per_plugin(pm: pluggy.PluginManager, hook_name: str) -> Iterable[tuple[str, Any]]:
    from prosaas_core.plugins import PluginHookError, call_hook

    try:
        return call_hook(pm, hook_name, on_error="raise")
    except PluginHookError as exc:
        raise _PluginFault(exc.plugin, str(exc)) from exc.__cause__


def blueprints_by_plugin(pm: pluggy.PluginManager) -> dict[str, list[Any]]:
    """Each plugin's Flask blueprints, by plugin name (imports Flask: call inside commands)."""
    from prosaas_core.plugins import plugin_blueprints

    return plugin_blueprints(pm)  # type: ignore[arg-type]


def load_registry(pm: pluggy.PluginManager) -> Registry:
    """`build_registry`, under the policy of ``prosaas_core.hookspecs``: a plugin whose hook
    raises or returns something malformed is rejected (not loaded, listed with the reason,
    logged once) and the registry is built from the others. Two plugins claiming one name
    still raise: prosaas cannot tell which one the operator meant."""
    from prosaas_core.plugins import reject

    while True:
        try:
            return build_registry(pm)
        except _PluginFault as fault:
            reject(pm, fault.plugin, str(fault).removeprefix(f"plugin {fault.plugin!r}: "))


def build_registry(pm: pluggy.PluginManager) -> Registry:
    """Collect job types, services and migration directories from every registered plugin;
    a malformed contribution raises `PluginError` naming its plugin."""
    reg = Registry()
    for plugin, items in _per_plugin(pm, "prosaas_job_types"):
        for jt in items:
            if not isinstance(jt, JobType):
                raise _PluginFault(plugin, f"plugin {plugin!r}: prosaas_job_types returned {jt!r}")
            if jt.name in reg.job_types:
                raise DuplicateJobTypeError(jt.name, reg.job_type_owner[jt.name], plugin)
            reg.job_types[jt.name] = jt
            reg.job_type_owner[jt.name] = plugin
    for plugin, items in _per_plugin(pm, "prosaas_services"):
        for svc in items:
            if not isinstance(svc, Service):
                raise _PluginFault(plugin, f"plugin {plugin!r}: prosaas_services returned {svc!r}")
            if svc.name in reg.services:
                raise PluginError(
                    f"service {svc.name!r} is provided by two plugins: "
                    f"{reg.service_owner[svc.name]!r} and {plugin!r}"
                )
            reg.services[svc.name] = svc
            reg.service_owner[svc.name] = plugin
    for plugin, items in _per_plugin(pm, "prosaas_migrations"):
        reg.migrations[plugin] = [str(p) for p in items]
    for plugin, items in _per_plugin(pm, "prosaas_schedules"):
        for sched in items:
            if not isinstance(sched, Schedule):
                raise _PluginFault(
                    plugin, f"plugin {plugin!r}: prosaas_schedules returned {sched!r}"
                )
            if not sched.per_business:
                raise _PluginFault(
                    plugin,
                    f"plugin {plugin!r}: schedule {sched.name!r} must be per_business=True "
                    "(a job belongs to a business; operators add one-business schedules)",
                )
            if sched.name in reg.schedules:
                raise PluginError(
                    f"schedule {sched.name!r} is provided by two plugins: "
                    f"{reg.schedule_owner[sched.name]!r} and {plugin!r}"
                )
            reg.schedules[sched.name] = sched
            reg.schedule_owner[sched.name] = plugin
    return reg
