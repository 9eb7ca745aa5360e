"""The Flask app factory (provisional: issue #4 grows it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from prosaas_core.api.support import ApiError
from prosaas_core.runtime import Runtime
from prosaas_core.settings import Settings


def create_app(config: Mapping[str, Any] | None = None, runtime: Runtime | None = None) -> Flask:
    """Build the app: settings from the environment (or `config`), the core blueprint, then
    every installed plugin's blueprints."""
    if runtime is None:
        env = None if config is None else {**__import__("os").environ, **config}
        runtime = Runtime(Settings.from_env(env))
    app = Flask("prosaas")
    app.extensions["prosaas"] = runtime
    app.register_error_handler(ApiError, lambda e: e.response())

    from prosaas_core.api.core import bp

    app.register_blueprint(bp)
    for blueprints in runtime.pm.hook.prosaas_blueprints():
        for blueprint in blueprints or ():
            app.register_blueprint(blueprint)
    return app
