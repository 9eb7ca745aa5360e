"""Alembic, driven programmatically: the core branch plus one branch per plugin."""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

CORE_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(plugin_dirs: list[str], connection: Connection | None = None) -> Config:
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


def head_revisions(plugin_dirs: list[str]) -> set[str]:
    """The heads this code needs: one per branch."""
    return set(ScriptDirectory.from_config(alembic_config(plugin_dirs)).get_heads())


def current_revisions(connection: Connection) -> set[str]:
    """The revisions the database is at (empty for a fresh database)."""
    return set(MigrationContext.configure(connection).get_current_heads())


def pending_revisions(connection: Connection, plugin_dirs: list[str]) -> list[str]:
    """Revisions between the database and the heads, oldest first."""
    script = ScriptDirectory.from_config(alembic_config(plugin_dirs))
    current = current_revisions(connection)
    pending = []
    for rev in script.walk_revisions("base", "heads"):
        if rev.revision not in current and not _is_ancestor_of_any(script, rev.revision, current):
            pending.append(rev.revision)
    return list(reversed(pending))


def _is_ancestor_of_any(script: ScriptDirectory, revision: str, current: set[str]) -> bool:
    for head in current:
        if any(r.revision == revision for r in script.iterate_revisions(head, "base")):
            return True
    return False


def upgrade_heads(connection: Connection, plugin_dirs: list[str]) -> None:
    """Upgrade every branch to its head on `connection`."""
    command.upgrade(alembic_config(plugin_dirs, connection), "heads")


def upgrade_sql(connection: Connection, plugin_dirs: list[str]) -> str:
    """The SQL `upgrade_heads` would run, from the database's current revisions (offline mode)."""
    import io

    buf = io.StringIO()
    cfg = alembic_config(plugin_dirs)
    cfg.output_buffer = buf
    current = current_revisions(connection)
    start = ",".join(sorted(current)) if current else None
    cfg.attributes["dialect_name"] = connection.dialect.name
    command.upgrade(cfg, f"{start}:heads" if start else "heads", sql=True)
    return buf.getvalue()
