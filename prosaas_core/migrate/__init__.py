"""Safe schema migration: Alembic upgrade of all heads, then the generated chk_job_type,
under one cross-process lock. (Provisional: see issue #2 for the full behaviour.)"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy import text

from prosaas_core.db import make_engine
from prosaas_core.migrate.alembic_ops import upgrade_heads

if TYPE_CHECKING:
    from prosaas_core.runtime import Runtime

log = logging.getLogger("prosaas.migrate")


def upgrade(rt: Runtime) -> None:
    """Bring the schema and chk_job_type in line with the installed plugins."""
    engine = make_engine(rt.settings.migration_url, application_name="prosaas-migrate")
    try:
        with engine.begin() as conn:
            upgrade_heads(conn, rt.registry.migration_dirs())
        if engine.dialect.name == "postgresql":
            with engine.begin() as conn:
                present = {
                    r[0]
                    for r in conn.execute(text("SELECT DISTINCT job_type FROM background_jobs"))
                }
                allowed = sorted(set(rt.registry.job_types) | present)
                values = ", ".join("'" + t + "'" for t in allowed) or "NULL"
                conn.execute(
                    text("ALTER TABLE background_jobs DROP CONSTRAINT IF EXISTS chk_job_type")
                )
                conn.execute(
                    text(
                        "ALTER TABLE background_jobs ADD CONSTRAINT chk_job_type "
                        f"CHECK (job_type IN ({values}))"
                    )
                )
    finally:
        engine.dispose()


def drift(rt: Runtime) -> list[str]:
    """One line per difference between the database and the installed plugins; [] when in sync.
    (Provisional: alembic heads only.)"""
    from prosaas_core.migrate.alembic_ops import current_revisions, head_revisions

    engine = make_engine(rt.settings.migration_url, application_name="prosaas-check")
    try:
        with engine.connect() as conn:
            missing = head_revisions(rt.registry.migration_dirs()) - current_revisions(conn)
    finally:
        engine.dispose()
    return [
        f"schema revision {r} is not applied: run `prosaas db upgrade`" for r in sorted(missing)
    ]
