"""Safe schema migration: Alembic upgrade of all heads, then the generated ``chk_job_type``,
all under one cross-process lock (see ``lock.py`` for the lock and its key).

Public API: ``upgrade(rt)``, ``drift(rt)``, ``plan_sql(rt)``, ``history(rt)``, ``UpgradeResult``.
Log lines an operator can grep: ``Acquired migration lock``, ``Migration N: updating
background_jobs job_type constraint``, ``Migration N complete: job_type constraint updated``,
``Allowed job types: ...``, ``Released migration lock``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prosaas_core.errors import MigrationLockTimeout
from prosaas_core.migrate.pooler import TransactionPoolerError
from prosaas_core.migrate.retry import DdlLockBudgetExceeded

if TYPE_CHECKING:
    from prosaas_core.runtime import Runtime

__all__ = [
    "UpgradeResult",
    "upgrade",
    "drift",
    "plan_sql",
    "history",
    "MigrationLockTimeout",
    "DdlLockBudgetExceeded",
    "TransactionPoolerError",
]

log = logging.getLogger("prosaas.migrate")
# Alembic 1.20 logs one INFO line per built-in plugin when it is imported: noise in every
# command. Set before anything here imports Alembic.
logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


@dataclass
class UpgradeResult:
    """What one ``upgrade`` did."""

    #: True when the lock was busy, skip_if_locked was given and the schema was already current
    skipped: bool = False
    #: Alembic revisions applied, in order
    revisions: list[str] = field(default_factory=list)
    #: number of the chk_job_type migration applied (or completed) by this run, if any
    migration: int | None = None
    allowed: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    #: job types no installed plugin provides that rows still use -> row count
    orphans: dict[str, int] = field(default_factory=dict)
    #: seconds spent waiting for the migration lock
    lock_waited: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.revisions) or self.migration is not None


def upgrade(
    rt: Runtime, *, lock_wait: float | None = None, skip_if_locked: bool = False
) -> UpgradeResult:
    """Bring the schema and chk_job_type in line with the installed plugins.

    Waits at most `lock_wait` seconds (default: settings.migration_lock_wait) for the migration
    lock, then raises MigrationLockTimeout; with `skip_if_locked`, returns
    ``UpgradeResult(skipped=True)`` instead when the schema is already what this code needs.
    DDL that keeps hitting lock_timeout past settings.migration_ddl_budget raises
    DdlLockBudgetExceeded. A migration URL through a transaction pooler (PgBouncer in
    transaction mode) raises TransactionPoolerError before anything is locked.
    """
    from prosaas_core.migrate.connection import log_timeouts, migration_engine
    from prosaas_core.migrate.lock import lock_for
    from prosaas_core.migrate.pooler import refuse_transaction_pooler
    from prosaas_core.migrate.steps import run_steps

    settings = rt.settings
    wait = settings.migration_lock_wait if lock_wait is None else lock_wait
    registry = rt.registry  # a plugin error fails here, before anything is locked
    refuse_transaction_pooler(settings)  # the session lock would be a no-op through PgBouncer
    engine = migration_engine(settings)
    try:
        lock = lock_for(engine)
        try:
            try:
                waited = lock.acquire(wait)
            except MigrationLockTimeout as exc:
                if not skip_if_locked:
                    raise
                lines = drift(rt)
                if lines:
                    raise MigrationLockTimeout(
                        f"{exc}; and the schema is behind this code: {lines[0]}"
                    ) from None
                log.warning(
                    "Skipping migrations: the migration lock was busy for %gs and the schema "
                    "is already up to date",
                    wait,
                )
                return UpgradeResult(skipped=True)
            log_timeouts(settings, engine)
            result = run_steps(engine, settings, set(registry.job_types), registry)
            result.lock_waited = waited
            return result
        finally:
            lock.release()
    finally:
        engine.dispose()


def drift(rt: Runtime) -> list[str]:
    """One line per difference between the database and the installed plugins; [] in sync.

    Cheap (catalog reads only, no lock on any table): ``/readyz`` and ``prosaas doctor`` call it.
    Types the constraint allows but no plugin provides are not drift (rows may still use them).
    """
    from sqlalchemy import text

    from prosaas_core.migrate.alembic_ops import (
        current_revisions,
        missing_heads,
        script_directory,
    )
    from prosaas_core.migrate.constraint import read_state

    registry = rt.registry
    dirs = registry.migration_dirs()
    with rt.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            # Only a hand-written constraint needs a table lock to read; never queue for long.
            conn.execute(text("SET LOCAL lock_timeout = 2000"))
        current = current_revisions(conn)
        state = read_state(conn)
        conn.rollback()
    lines = []
    script = script_directory(dirs)
    for head in missing_heads(current, dirs):
        labels = sorted(script.get_revision(head).branch_labels)
        branch = f" (branch {', '.join(labels)})" if labels else ""
        lines.append(f"schema revision {head}{branch} is not applied: run `prosaas db upgrade`")
    if not state.table_exists:
        if not lines:
            lines.append("table background_jobs is missing: run `prosaas db upgrade`")
        return lines
    if state.allowed is None:
        lines.append("chk_job_type is missing on background_jobs: run `prosaas db upgrade`")
        return lines
    for name in sorted(set(registry.job_types) - state.allowed):
        lines.append(
            f"job type '{name}' is installed but not allowed by chk_job_type: "
            f"run `prosaas db upgrade`"
        )
    if not state.validated:
        lines.append(
            "chk_job_type is NOT VALID (an interrupted migration): run `prosaas db upgrade`"
        )
    return lines


def plan_sql(rt: Runtime) -> str:
    """The SQL ``upgrade`` would run now, running nothing."""
    from prosaas_core.migrate.steps import render_plan

    return render_plan(rt)


def history(rt: Runtime) -> list[dict[str, Any]]:
    """The numbered chk_job_type migrations, oldest first ([] before the first upgrade)."""
    from sqlalchemy import inspect, select

    from prosaas_core.models import JobTypeMigration

    with rt.engine.connect() as conn:
        if not inspect(conn).has_table(JobTypeMigration.__tablename__):
            return []
        rows = conn.execute(select(JobTypeMigration).order_by(JobTypeMigration.number)).all()
    return [
        {
            "number": r.number,
            "applied_at": r.applied_at.isoformat() if r.applied_at else None,
            "allowed": list(r.allowed or []),
            "added": list(r.added or []),
            "removed": list(r.removed or []),
            "host": r.host,
            "pid": r.pid,
            "sql": r.sql,
        }
        for r in rows
    ]
