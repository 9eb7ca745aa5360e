"""The steps of ``upgrade`` (run with the migration lock held) and their SQL preview."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy import Connection, Engine, inspect
from sqlalchemy.exc import IntegrityError

from prosaas_core.migrate import constraint as ck
from prosaas_core.migrate.alembic_ops import upgrade_heads, upgrade_sql
from prosaas_core.migrate.connection import migration_engine
from prosaas_core.migrate.retry import retry_on_lock_timeout
from prosaas_core.settings import Settings

if TYPE_CHECKING:
    from prosaas_core.migrate import UpgradeResult
    from prosaas_core.registry import Registry
    from prosaas_core.runtime import Runtime

log = logging.getLogger("prosaas.migrate")
T = TypeVar("T")

#: how many times the constraint step re-plans when VALIDATE finds a row it did not expect
MAX_REPLANS = 3


def _in_txn(conn: Connection, fn: Callable[[], T]) -> Callable[[], T]:
    """`fn` in one transaction of its own: rolled back whole on a lock timeout."""

    def run() -> T:
        with conn.begin():
            return fn()

    return run


def run_steps(
    engine: Engine, settings: Settings, installed: set[str], registry: Registry
) -> UpgradeResult:
    """Alembic upgrade of all heads, then the chk_job_type step. The caller holds the lock."""
    from prosaas_core.migrate import UpgradeResult

    result = UpgradeResult()
    budget = settings.migration_ddl_budget
    dirs = registry.migration_dirs()
    with engine.connect() as conn:
        # On PostgreSQL Alembic owns the transaction (one for the run, rolled back whole on a
        # lock timeout), so a revision can step out of it in autocommit_block() to build an
        # index CONCURRENTLY (prosaas_core.migrate.online_index).
        run = (lambda: upgrade_heads(conn, dirs)) if conn.dialect.name == "postgresql" else None
        result.revisions = retry_on_lock_timeout(
            "Schema upgrade", run or _in_txn(conn, lambda: upgrade_heads(conn, dirs)), budget
        )
        if result.revisions:
            log.info("Schema upgraded: applied %s", ", ".join(result.revisions))
        else:
            log.info("Schema up to date: every branch is at its head")
        _constraint_step(conn, installed, budget, result)
    return result


def _constraint_step(
    conn: Connection, installed: set[str], budget: float, result: UpgradeResult
) -> None:
    postgres = conn.dialect.name == "postgresql"
    for _ in range(MAX_REPLANS):
        state, plan = retry_on_lock_timeout(
            "Reading job types in use",
            _in_txn(conn, lambda: _read_and_plan(conn, installed)),
            budget,
        )
        result.orphans = plan.orphans
        for name, count in plan.orphans.items():
            log.warning(
                "Job type %r is not provided by any installed plugin but %s rows use it: "
                "it stays allowed by chk_job_type (no row is deleted or rewritten)",
                name,
                ck.rows_text(count),
            )
        result.allowed = plan.allowed
        if plan.nothing_to_do:
            log.info("chk_job_type is up to date")
            log.info("Allowed job types: %s", ", ".join(plan.allowed) or "(none)")
            return
        n = plan.number
        if plan.change:
            swap: Callable[[], None]
            log.info("Migration %d: updating background_jobs job_type constraint", n)
            log.info(
                "  added: %s; removed: %s",
                ", ".join(plan.added) or "-",
                ", ".join(plan.removed) or "-",
            )
            if postgres:
                log.info("  → Dropping old chk_job_type, adding the new one NOT VALID...")
                # its own connection, one message: see swap_ddl (the number is planned)
                swap = functools.partial(ck.swap_ddl, conn, plan)
            else:
                log.info("  → Rebuilding background_jobs with the new chk_job_type (batch)...")
                swap = _in_txn(conn, functools.partial(ck.swap_sqlite, conn, plan, state))
            retry_on_lock_timeout(f"Migration {n}", swap, budget)
            result.added, result.removed = plan.added, plan.removed
        if postgres and (plan.change or not state.annotated):
            retry_on_lock_timeout(
                f"Migration {n} comment",
                _in_txn(conn, functools.partial(ck.annotate, conn, plan)),
                budget,
            )
        if postgres:
            log.info("  → Validating chk_job_type against existing rows...")
            try:
                retry_on_lock_timeout(
                    f"Migration {n} validation",
                    _in_txn(conn, lambda: ck.validate_postgres(conn)),
                    budget,
                )
            except IntegrityError:
                # A row of a type being removed was inserted between planning and the swap
                # (an old app version still running): plan again, keeping that type.
                log.warning("Migration %d: rows of a removed type appeared; planning again", n)
                continue
        result.migration = n
        log.info("Migration %d complete: job_type constraint updated", n)
        log.info("Allowed job types: %s", ", ".join(plan.allowed) or "(none)")
        return
    raise RuntimeError("chk_job_type kept changing under the migration; run it again")


def _read_and_plan(conn: Connection, installed: set[str]) -> tuple[ck.ConstraintState, ck.Plan]:
    state = ck.read_state(conn)
    if not state.table_exists:
        raise RuntimeError("background_jobs does not exist after the schema upgrade")
    plan = ck.make_plan(conn, installed, state)
    last = ck.next_number(conn)
    # A completed-late validation belongs to the migration that swapped the constraint.
    plan.number = last + 1 if plan.change else last
    return state, plan


def render_plan(rt: Runtime) -> str:
    """The SQL of the next ``upgrade``: Alembic offline output plus the constraint change."""
    registry = rt.registry
    installed = set(registry.job_types)
    engine = migration_engine(rt.settings)
    try:
        with engine.connect() as conn:
            dialect = conn.dialect.name
            parts = [
                upgrade_sql(conn, dialect, registry.migration_dirs())
                or "-- Schema: every branch is at its head\n"
            ]
            state = ck.read_state(conn)
            if state.table_exists:
                plan = ck.make_plan(conn, installed, state)
                has_history = inspect(conn).has_table("prosaas_job_type_migrations")
                last = ck.next_number(conn) if has_history else 0
            else:
                plan = ck.Plan(allowed=sorted(installed), added=sorted(installed), change=True)
                last = 0
            conn.rollback()
    finally:
        engine.dispose()
    parts.append(_constraint_sql(plan, last, dialect))
    return "\n".join(parts)


def _constraint_sql(plan: ck.Plan, last: int, dialect: str) -> str:
    for name, count in plan.orphans.items():
        log.warning(
            "Job type %r has no installed plugin but %s rows: kept allowed",
            name,
            ck.rows_text(count),
        )
    if plan.nothing_to_do:
        return "-- chk_job_type is up to date\n"
    if not plan.change:
        validate = ck.ddl_statements(plan)[1]
        return f"-- Migration {last}: complete the interrupted validation\n{validate};\n"
    n = last + 1
    head = (
        f"-- Migration {n}: updating background_jobs job_type constraint\n"
        f"-- added: {', '.join(plan.added) or '-'}; removed: {', '.join(plan.removed) or '-'}\n"
    )
    if dialect != "postgresql":
        return head + ck.sqlite_sql(plan) + "\n"
    swap, validate = ck.ddl_statements(plan)
    return (
        f"{head}BEGIN;\n"
        f"-- + history row {n} in prosaas_job_type_migrations (before the lock is taken)\n"
        f"{swap}; COMMIT;  -- one message: the lock is held across no client round trip\n"
        f"-- + COMMENT ON CONSTRAINT {ck.NAME} (the allowed set, read without locking),"
        f" in its own transaction\n"
        f"{validate};\n"
    )
