"""The testing kit's pytest fixtures, registered through the ``pytest11`` entry point of the
``prosaas`` distribution: every test run in an environment where prosaas is installed has them.

Real servers only (see ``prosaas_core.testing`` for where they come from). A conftest may
override any of them by name and ask for the original, e.g. to add settings to ``env``::

    @pytest.fixture
    def env(env):
        return {**env, "GREETINGS_BATCH": "10"}

``runtime``, ``cli``, ``app``, ``worker`` and ``serve`` all use the overridden ``env``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from prosaas_core.testing import (
    REDIS_DB,
    REDIS_SERVER,
    ServeProcess,
    WorkerProcess,
    bearer,
    create_pg_database,
    drop_pg_database,
    prosaas_env,
    run_cli,
)

if TYPE_CHECKING:
    import flask
    from flask.testing import FlaskClient

    from prosaas_core.runtime import Runtime


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped after the test."""
    url = create_pg_database()
    yield url
    drop_pg_database(url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file in the test's temporary directory (the embedded default)."""
    return f"sqlite:///{tmp_path / 'prosaas.db'}"


@pytest.fixture
def redis_url() -> Iterator[str]:
    """The test Redis database, empty at the start of the test."""
    import redis

    url = f"{REDIS_SERVER}/{REDIS_DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def env(pg_url: str, redis_url: str) -> dict[str, str]:
    """Environment for prosaas processes: the test databases and short intervals."""
    return prosaas_env(pg_url, redis_url)


@pytest.fixture
def runtime(env: dict[str, str]) -> Iterator[Runtime]:
    """A runtime over the test databases with the installed plugins, schema migrated."""
    from prosaas_core import migrate
    from prosaas_core.plugins import get_plugin_manager
    from prosaas_core.runtime import Runtime
    from prosaas_core.settings import Settings

    rt = Runtime(Settings.from_env(env), pm=get_plugin_manager(load_entrypoints=True))
    migrate.upgrade(rt)
    yield rt
    rt.close()


@pytest.fixture
def cli(env: dict[str, str]) -> Callable[..., Any]:
    """`cli("db", "check")` runs the real console script against the test databases."""

    def _run(*args: str, check: bool = False, extra_env: dict | None = None, **kw: Any):
        return run_cli(*args, env={**env, **(extra_env or {})}, check=check, **kw)

    return _run


@pytest.fixture
def business(runtime: Runtime) -> int:
    """A business id in the test database."""
    from prosaas_core.models import Business

    with runtime.session() as s:
        b = Business(name="Acme Calls")
        s.add(b)
        s.flush()
        return b.id


@pytest.fixture
def token(runtime: Runtime, business: int) -> str:
    """A bearer token of `business`."""
    from prosaas_core.tokens import create_token

    with runtime.session() as s:
        return create_token(s, business)


@pytest.fixture
def auth(token: str) -> dict[str, str]:
    """The ``Authorization`` header of `business`'s token."""
    return bearer(token)


@pytest.fixture
def app(runtime: Runtime) -> flask.Flask:
    """``create_app()`` over the test runtime, every installed plugin's blueprints mounted."""
    from prosaas_core import create_app

    return create_app(runtime=runtime)


@pytest.fixture
def client(app: flask.Flask) -> FlaskClient:
    """Flask's test client of `app` (in-process HTTP)."""
    return app.test_client()


@pytest.fixture
def worker(env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """`worker("--burst", extra_env={...})` starts a real ``prosaas worker`` process (its log
    in the test's temporary directory); every one still running is killed at teardown."""
    started: list[WorkerProcess] = []

    def _start(*args: str, extra_env: dict | None = None) -> WorkerProcess:
        log = tmp_path / f"worker{len(started)}.log"
        w = WorkerProcess({**env, **(extra_env or {})}, *args, log_path=log)
        started.append(w)
        return w

    yield _start
    for w in started:
        w.kill()


@pytest.fixture
def start_worker(worker: Callable[..., WorkerProcess]) -> Callable[..., WorkerProcess]:
    """The same as `worker` (the name the core's tests use)."""
    return worker


@pytest.fixture
def serve(env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    """`serve(workers=1, extra_env={...})` starts a real ``prosaas serve`` on a free port and
    returns it started (``.url``); every one is stopped at teardown."""
    started: list[ServeProcess] = []

    def _start(*, extra_env: dict | None = None, **kw: Any) -> ServeProcess:
        kw.setdefault("log_path", tmp_path / f"serve{len(started)}.log")
        srv = ServeProcess({**env, **(extra_env or {})}, **kw)
        started.append(srv)
        return srv.start()

    yield _start
    for srv in started:
        srv.stop()
