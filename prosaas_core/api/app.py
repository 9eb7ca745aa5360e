"""The Flask app factory: settings, error handlers, core blueprints, then plugin blueprints."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Flask

from prosaas_core.runtime import Runtime
from prosaas_core.settings import Settings

log = logging.getLogger("prosaas.api")


def _runtime(config: Mapping[str, Any] | None) -> Runtime:
    env = dict(os.environ)
    if config is not None:
        env.update({k: str(v) for k, v in config.items() if v is not None})
    return Runtime(Settings.from_env(env))


def migrate_at_startup(rt: Runtime) -> None:
    """``RUN_MIGRATIONS=1``: upgrade, skipping (not crashing) when another migrator holds the
    lock past the configured wait, and serving anyway when the database is not reachable
    (``/readyz`` then says what is wrong)."""
    from prosaas_core import migrate
    from prosaas_core.errors import MigrationLockTimeout

    log.info("MIGRATION CHECKPOINT: RUN_MIGRATIONS=1, upgrading the schema at start-up")
    try:
        result = migrate.upgrade(rt, skip_if_locked=True)
    except MigrationLockTimeout as exc:
        log.warning("Migrations skipped at start-up: %s", exc)
        return
    except migrate.TransactionPoolerError as exc:
        log.error("Migrations refused at start-up: %s", exc)
        return
    except Exception:
        log.exception("Migrations failed at start-up; serving anyway, /readyz reports the state")
        return
    log.info("MIGRATIONS COMPLETE: %s", result)


def _collect_blueprints(rt: Runtime, reserved: set[str]) -> dict[str, list[Any]]:
    """Every plugin's blueprints, collected once through the one hook caller, before the
    registry: a plugin rejected here (its hook raised, or a blueprint name another plugin took)
    loses its job types too, as ``prosaas_core.hookspecs`` says."""
    from prosaas_core.plugins import plugin_blueprints, reject

    loaded = len(rt.pm.get_plugins())
    taken = dict.fromkeys(reserved, "prosaas")
    for plugin, blueprints in list(plugin_blueprints(rt.pm).items()):
        wrong = next((bp for bp in blueprints if not isinstance(bp, Blueprint)), None)
        if wrong is not None:
            reject(rt.pm, plugin, f"prosaas_blueprints returned {wrong!r}, not a Blueprint")
            continue
        clash = next((bp.name for bp in blueprints if bp.name in taken), None)
        if clash is not None:
            reject(rt.pm, plugin, f"blueprint name {clash!r} is taken by {taken[clash]!r}")
            continue
        taken.update((bp.name, plugin) for bp in blueprints)
    if len(rt.pm.get_plugins()) != loaded:
        rt.__dict__.pop("registry", None)  # built before the rejection: build it again
    return plugin_blueprints(rt.pm)


def _refuse_nul() -> None:
    """400 for a NUL character in the path or query string: PostgreSQL text cannot hold one,
    so it would otherwise fail in the database as a 500."""
    from flask import request

    from prosaas_core.api.support import ApiError

    query = request.query_string
    if "\x00" in request.path or (
        # the arguments are parsed only when the raw query could hold a NUL: most have none
        (b"\x00" in query or b"%00" in query)
        and any("\x00" in k or "\x00" in v for k, v in request.args.items(multi=True))
    ):
        raise ApiError(400, "Invalid request", "the URL contains a NUL character")


def create_app(config: Mapping[str, Any] | None = None, runtime: Runtime | None = None) -> Flask:
    """Build the app: settings from the environment (overridden by `config`, a mapping of the
    same keys, e.g. ``{"DATABASE_URL": ...}``), the core blueprints, then every installed
    plugin's blueprints. Migrates at start-up only with ``RUN_MIGRATIONS=1``."""
    from prosaas_core import dashboard
    from prosaas_core.api import core, errors, leads, ops, schedules
    from prosaas_core.api.metrics import make_registry
    from prosaas_core.api.params import IdConverter

    rt = runtime if runtime is not None else _runtime(config)
    core_blueprints = [core.bp, leads.bp, ops.bp, schedules.bp, dashboard.bp]
    plugin_blueprints = _collect_blueprints(rt, {bp.name for bp in core_blueprints})
    rt.registry  # noqa: B018 -- a broken plugin set (duplicate job type) fails at start-up
    app = Flask("prosaas", static_folder=None)  # an API: no static files route
    app.config["MAX_CONTENT_LENGTH"] = rt.settings.max_body_bytes
    app.config["MAX_FORM_MEMORY_SIZE"] = min(rt.settings.max_body_bytes, 1024 * 1024)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.url_map.converters["id"] = IdConverter
    app.extensions["prosaas"] = rt
    app.extensions["prosaas_metrics"] = make_registry(rt)
    errors.install(app)
    app.before_request(_refuse_nul)
    if rt.settings.run_migrations:
        migrate_at_startup(rt)
    for bp in core_blueprints:
        app.register_blueprint(bp)
    for blueprints in plugin_blueprints.values():
        for bp in blueprints:
            app.register_blueprint(bp)
    return app
