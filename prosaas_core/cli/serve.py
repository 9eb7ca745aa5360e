"""``prosaas serve``: the HTTP API under gunicorn."""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

import click


def run_gunicorn(
    factory: Callable[[], Any],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 2,
    threads: int = 4,
    timeout: int = 60,
    access_log: bool = False,
    read_timeout: float = 30.0,
    max_body: int = 16 * 1024 * 1024,
) -> None:
    """Serve the WSGI app `factory()` builds with gunicorn, on `BufferingWorker` (gthread
    threads that only ever get a request already read whole, so slow clients hold no thread;
    one not received within `read_timeout` seconds is answered 408).

    The app is built once in the master before forking (``preload_app``), so plugins load and
    ``RUN_MIGRATIONS`` runs once, not once per worker; each forked worker then drops the
    database connections it inherited (SQLAlchemy's pool is not fork-safe) and opens its own.
    """
    from gunicorn.app.base import BaseApplication

    from prosaas_core.api.gworker import BufferingWorker

    BufferingWorker.read_timeout = read_timeout
    # the buffer's bound: a body announced bigger is refused (413) without being read
    BufferingWorker.max_body = max_body

    holder: dict[str, Any] = {}

    def post_fork(_server: Any, _worker: Any) -> None:
        app = holder.get("app")
        rt = getattr(app, "extensions", {}).get("prosaas") if app is not None else None
        if rt is not None and "engine" in rt.__dict__:
            from prosaas_core.db import dispose_after_fork

            dispose_after_fork(rt.engine)

    class Server(BaseApplication):
        def load_config(self) -> None:
            options = {
                "bind": f"{host}:{port}",
                "workers": workers,
                "worker_class": "prosaas_core.api.gworker.BufferingWorker",
                "threads": threads,
                "timeout": timeout,
                "preload_app": True,
                "post_fork": post_fork,
                "accesslog": "-" if access_log else None,
                "errorlog": "-",
                "proc_name": "prosaas-api",
            }
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            holder["app"] = factory()
            # frozen in the master, the app's start-up objects are out of every worker's
            # collections: no full walk of them in the middle of a request, and fewer of the
            # pages they share with the master copied by a worker's collector
            gc.collect()
            gc.freeze()
            return holder["app"]

    Server().run()


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--workers",
    default=2,
    show_default=True,
    envvar="WEB_CONCURRENCY",
    type=click.IntRange(1, 256),
    help="Worker processes (env: WEB_CONCURRENCY).",
)
@click.option("--threads", default=4, show_default=True, type=click.IntRange(1, 256))
@click.option("--timeout", default=60, show_default=True, type=click.IntRange(1, 3600))
@click.option(
    "--read-timeout",
    default=30.0,
    show_default=True,
    envvar="PROSAAS_READ_TIMEOUT",
    type=click.FloatRange(0.1, 3600),
    help="Seconds a client has to send a whole request (and to read a response write); "
    "408 past it (env: PROSAAS_READ_TIMEOUT).",
)
@click.option("--access-log", is_flag=True, help="Log every request to stderr.")
def serve(
    host: str,
    port: int,
    workers: int,
    threads: int,
    timeout: int,
    read_timeout: float,
    access_log: bool,
) -> None:
    """Serve the HTTP API with gunicorn: the core endpoints and every plugin's blueprints.

    Settings come from the environment. With RUN_MIGRATIONS=1 the schema is upgraded once at
    start-up (skipped, not crashed, when another migrator holds the lock).
    """
    import functools
    import os

    from prosaas_core.api.app import create_app
    from prosaas_core.settings import Settings

    settings = Settings.from_env()
    config = {}
    if not os.environ.get("PROSAAS_DB_POOL_SIZE") and threads > settings.db_pool_size:
        # every request thread may hold a connection at once: keep that many open rather than
        # open (and close) a PostgreSQL backend per request at full load
        config["PROSAAS_DB_POOL_SIZE"] = str(threads)
    run_gunicorn(
        functools.partial(create_app, config),
        host=host,
        port=port,
        workers=workers,
        threads=threads,
        timeout=timeout,
        access_log=access_log,
        read_timeout=read_timeout,
        max_body=settings.max_body_bytes,
    )
