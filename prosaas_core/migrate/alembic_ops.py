"""Alembic, driven programmatically: the core branch plus one branch per plugin.

A database may carry revisions of a plugin that is no longer installed (its branch is in
``alembic_version`` but its scripts are gone). Those revisions are left alone: upgrades start from
the revisions this code knows, so removing a plugin never makes ``db upgrade`` fail.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text

VERSION_TABLE = "alembic_version"
CORE_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(plugin_dirs: Sequence[str], connection: Connection | None = None) -> Config:
    """An Alembic config whose version locations are the core's and every plugin's."""
    cfg = Config()
    cfg.set_main_option("script_location", str(CORE_DIR))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option(
        "version_locations", os.pathsep.join([str(CORE_DIR / "versions"), *plugin_dirs])
    )
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@lru_cache(maxsize=16)
def _script(plugin_dirs: tuple[str, ...]) -> ScriptDirectory:
    # Parsing the revision files is the slow part of a drift check: do it once per process.
    return ScriptDirectory.from_config(alembic_config(plugin_dirs))


def script_directory(plugin_dirs: Sequence[str]) -> ScriptDirectory:
    return _script(tuple(plugin_dirs))


def head_revisions(plugin_dirs: Sequence[str]) -> set[str]:
    """The heads this code needs: one per branch."""
    return set(script_directory(plugin_dirs).get_heads())


def current_revisions(connection: Connection) -> set[str]:
    """The revisions the database is at (empty for a fresh database).

    Read straight from ``alembic_version``: cheap and quiet, as ``drift()`` needs.
    """
    if not inspect(connection).has_table(VERSION_TABLE):
        return set()
    return set(connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars())


def _known(script: ScriptDirectory, revisions: set[str]) -> set[str]:
    """The subset of `revisions` this code has scripts for."""
    all_revs = {s.revision for s in script.walk_revisions("base", "heads")}
    return revisions & all_revs


def missing_heads(current: set[str], plugin_dirs: Sequence[str]) -> list[str]:
    """Heads this code needs that the database (at `current`) has not reached, sorted."""
    script = script_directory(plugin_dirs)
    known = _known(script, current)
    reached: set[str] = set()
    for rev in known:
        reached.update(s.revision for s in script.iterate_revisions(rev, "base"))
    return sorted(h for h in script.get_heads() if h not in reached)


def _run(cfg: Config, plugin_dirs: Sequence[str], *, as_sql: bool, start: set[str]) -> None:
    script = script_directory(plugin_dirs)

    def upgrade(rev: tuple[str, ...], _context: object) -> list:
        # Skip revisions of branches whose plugin is gone: Alembic cannot resolve them.
        # (command.upgrade does the same call; only the starting revisions differ.)
        # Alembic annotates the current revision as a str; it takes a tuple of them as well
        return script._upgrade_revs("heads", tuple(_known(script, set(rev))))  # type: ignore[arg-type]

    with EnvironmentContext(
        cfg,
        script,
        fn=upgrade,
        as_sql=as_sql,
        starting_rev=sorted(start) if as_sql and start else None,
        destination_rev="heads",
    ):
        script.run_env()


def upgrade_heads(connection: Connection, plugin_dirs: Sequence[str]) -> list[str]:
    """Upgrade every branch to its head on `connection`; return the revisions applied, in order.

    Runs inside the caller's transaction (PostgreSQL DDL is transactional), so a failure or a
    killed process leaves the schema exactly as it was.
    """
    applied: list[str] = []

    def record(*, step, **_kw) -> None:
        applied.extend(step.up_revision_ids)

    cfg = alembic_config(plugin_dirs, connection)
    cfg.attributes["on_version_apply"] = [record]
    _run(cfg, plugin_dirs, as_sql=False, start=set())
    return applied


def upgrade_sql(
    connection: Connection | None, dialect_name: str, plugin_dirs: Sequence[str]
) -> str:
    """The SQL `upgrade_heads` would run from the database's current revisions (offline mode).

    `connection` (read only) supplies the current revisions; None means a fresh database.
    """
    buf = io.StringIO()
    cfg = alembic_config(plugin_dirs)
    cfg.output_buffer = buf
    cfg.attributes["dialect_name"] = dialect_name
    current = current_revisions(connection) if connection is not None else set()
    script = script_directory(plugin_dirs)
    start = _known(script, current)
    if not missing_heads(current, plugin_dirs):
        return ""
    _run(cfg, plugin_dirs, as_sql=True, start=start)
    return buf.getvalue()
