"""The generated ``chk_job_type`` constraint: read it, plan its change, apply it safely.

The allowed set is the installed job types plus every type still present in
``background_jobs`` (a removed plugin's rows stay valid; no row is ever touched). On PostgreSQL
a change is ``DROP`` + ``ADD ... NOT VALID`` in one short transaction (under ``lock_timeout``),
then ``VALIDATE CONSTRAINT`` in its own, which does not block writers. On SQLite the table is
rebuilt through Alembic's batch mode. Each change is a numbered row of
``prosaas_job_type_migrations``, written in the same transaction as the DDL.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import Connection, func, insert, inspect, select, text

from prosaas_core.models import JobTypeMigration

log = logging.getLogger("prosaas.migrate")

TABLE = "background_jobs"
NAME = "chk_job_type"
_QUOTED = re.compile(r"'((?:[^']|'')*)'")


@dataclass(frozen=True)
class ConstraintState:
    """What the database has: `allowed` is None when the constraint does not exist."""

    table_exists: bool
    allowed: frozenset[str] | None = None
    validated: bool = True
    #: False when PostgreSQL's constraint has no prosaas comment matching it (read by printing
    #: the expression): a hand-written one, or a migrator killed between swap and comment
    annotated: bool = True


@dataclass
class Plan:
    """What the constraint step will do."""

    allowed: list[str]
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    #: types no plugin provides that rows still use -> row count (kept allowed)
    orphans: dict[str, int] = field(default_factory=dict)
    change: bool = False
    validate_only: bool = False
    number: int | None = None

    @property
    def nothing_to_do(self) -> bool:
        return not self.change and not self.validate_only


def quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def check_sql(allowed: Iterable[str]) -> str:
    """The CHECK body; an empty set allows nothing (``IN ()`` is not valid SQL)."""
    values = sorted(allowed)
    return f"job_type IN ({', '.join(quote(v) for v in values)})" if values else "1 = 0"


def parse_allowed(sqltext: str) -> frozenset[str]:
    """The quoted values of a CHECK definition, as PostgreSQL or SQLite print it back."""
    return frozenset(m.replace("''", "'") for m in _QUOTED.findall(sqltext))


def read_state(conn: Connection) -> ConstraintState:
    """The constraint as the database has it, from the catalogs only: no lock on the table.

    PostgreSQL can only print a CHECK expression (``pg_get_constraintdef``) after locking the
    table, which would queue behind any DDL. So the swap also stores the allowed set in the
    constraint's comment, with the md5 of its parsed expression (``conbin``); while that md5
    still matches, the comment is read. A constraint written by hand falls back to printing it.
    """
    if conn.dialect.name == "postgresql":
        if conn.execute(text(f"SELECT to_regclass('{TABLE}')")).scalar() is None:
            return ConstraintState(table_exists=False)
        row = conn.execute(
            text(
                "SELECT oid, convalidated, obj_description(oid, 'pg_constraint'),"
                " md5(conbin::text) FROM pg_constraint"
                f" WHERE conrelid = to_regclass('{TABLE}') AND conname = '{NAME}'"
            )
        ).first()
        if row is None:
            return ConstraintState(table_exists=True)
        oid, validated, comment, digest = row
        allowed = _from_comment(comment, digest)
        if allowed is None:
            definition = conn.execute(
                text("SELECT pg_get_constraintdef(:oid)"), {"oid": oid}
            ).scalar_one()
            return ConstraintState(True, parse_allowed(definition), bool(validated), False)
        return ConstraintState(True, allowed, bool(validated))
    insp = inspect(conn)
    if not insp.has_table(TABLE):
        return ConstraintState(table_exists=False)
    for check in insp.get_check_constraints(TABLE):
        if check["name"] == NAME:
            return ConstraintState(True, parse_allowed(check["sqltext"]), True)
    return ConstraintState(table_exists=True)


def _from_comment(comment: str | None, digest: str) -> frozenset[str] | None:
    try:
        data = json.loads(comment or "")
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("conbin_md5") != digest:
        return None
    return frozenset(data.get("allowed") or ())


def comment_sql(plan: Plan, digest: str) -> str:
    data = {"generated_by": "prosaas", "migration": plan.number, "allowed": plan.allowed}
    data["conbin_md5"] = digest
    return f"COMMENT ON CONSTRAINT {NAME} ON {TABLE} IS {quote(json.dumps(data))}"


def present_types(conn: Connection) -> set[str]:
    """Every job type rows use: a loose index scan of ``ix_background_jobs_job_type_id``,
    one probe per type (a recursive CTE: each step finds the next type above the last),
    instead of reading one index entry per row."""
    rows = conn.execute(
        text(
            # min() is one index probe on PostgreSQL and SQLite alike
            "WITH RECURSIVE t(job_type) AS ("
            f" SELECT min(job_type) FROM {TABLE}"
            " UNION ALL"
            f" SELECT (SELECT min(b.job_type) FROM {TABLE} b WHERE b.job_type > t.job_type)"
            " FROM t WHERE t.job_type IS NOT NULL"
            ") SELECT job_type FROM t WHERE job_type IS NOT NULL"
        )
    )
    return {r[0] for r in rows}


#: orphan types are counted up to this many rows: past it the plan only needs "still used"
#: (keep the type allowed), and an exact count would read every row of the type (as big as the
#: history). Small, so a `db upgrade` that removes a plugin reads the same few index entries
#: at 0 or 5,000,000 rows (bench/history.py; 10,000 grew the plan 1.8x at 5M)
COUNT_CAP = 100


def present_counts(conn: Connection, types: Iterable[str] | None = None) -> dict[str, int]:
    """Rows per job type in background_jobs, for `types` only (None: every type present), up
    to COUNT_CAP + 1 (meaning "more than COUNT_CAP"). Each count is a range of the
    ``(job_type, id)`` index that stops after COUNT_CAP + 1 entries."""
    names = sorted(present_types(conn) if types is None else types)
    out = {}
    for name in names:
        n = conn.execute(
            text(
                f"SELECT count(*) FROM (SELECT 1 FROM {TABLE} WHERE job_type = :t"
                f" LIMIT {COUNT_CAP + 1}) AS capped"
            ),
            {"t": name},
        ).scalar()
        if n:
            out[name] = int(n)
    return out


def rows_text(count: int) -> str:
    """A present_counts figure for a log line."""
    return f"more than {COUNT_CAP}" if count > COUNT_CAP else str(count)


def make_plan(conn: Connection, installed: set[str], state: ConstraintState) -> Plan:
    """Compare the database with the installed types. Reads rows only when it must: types the
    constraint allows but no plugin provides (are they still used?), or every type when the
    constraint is missing or not validated (rows may predate it)."""
    current = state.allowed
    if current is None or not state.validated:
        # only the types no plugin provides are counted: installed ones are allowed anyway
        counts = present_counts(conn, present_types(conn) - installed)
    else:
        counts = present_counts(conn, current - installed)
    orphans = {t: n for t, n in sorted(counts.items()) if t not in installed}
    target = set(installed) | set(orphans)
    plan = Plan(allowed=sorted(target), orphans=orphans)
    if current is not None and target == current:
        plan.validate_only = not state.validated
        return plan
    plan.change = True
    plan.added = sorted(target - (current or set()))
    plan.removed = sorted((current or set()) - target)
    return plan


def ddl_statements(plan: Plan) -> list[str]:
    """The PostgreSQL statements of a change: one short ALTER, then the validation."""
    return [
        f"ALTER TABLE {TABLE} DROP CONSTRAINT IF EXISTS {NAME}, "
        f"ADD CONSTRAINT {NAME} CHECK ({check_sql(plan.allowed)}) NOT VALID",
        f"ALTER TABLE {TABLE} VALIDATE CONSTRAINT {NAME}",
    ]


def next_number(conn: Connection) -> int:
    return int(
        conn.execute(select(func.coalesce(func.max(JobTypeMigration.number), 0))).scalar_one()
    )


def record(conn: Connection, plan: Plan, sql: str) -> None:
    """The history row, written in the transaction that changes the constraint."""
    conn.execute(
        insert(JobTypeMigration).values(
            number=plan.number,
            allowed=plan.allowed,
            added=plan.added,
            removed=plan.removed,
            sql=sql,
            host=socket.gethostname(),
            pid=os.getpid(),
        )
    )


#: the history row of a PostgreSQL change, written first in the swap's transaction
_RECORD = (
    "INSERT INTO prosaas_job_type_migrations (number, allowed, added, removed, sql, host, pid)"
    " VALUES (%(number)s, %(allowed)s, %(added)s, %(removed)s, %(sql)s, %(host)s, %(pid)s)"
)


def swap_ddl(conn: Connection, plan: Plan) -> None:
    """DROP + ADD NOT VALID and the history row, in one transaction on an autocommit
    connection of its own: ``BEGIN; INSERT history``, then ``ALTER ...; COMMIT`` as one
    message.

    The ALTER's ACCESS EXCLUSIVE lock queues every writer of background_jobs behind it, so it
    is held only while the server runs the ALTER and commits: the history row is written
    before the lock is taken, and no client round trip is left between the ALTER and the
    COMMIT (each one, on a loaded machine, held the writers for milliseconds more). The commit
    does not wait for its WAL flush either (``synchronous_commit = off``, this transaction
    only): the DDL and its history row are one transaction, so a crash can only lose both (the
    next upgrade does the change again), and the upgrade's next commit flushes it. A lock
    timeout leaves nothing behind."""
    if plan.number is None:
        plan.number = next_number(conn) + 1
    swap, validate = ddl_statements(plan)
    params = {
        "number": plan.number,
        "allowed": json.dumps(plan.allowed),
        "added": json.dumps(plan.added),
        "removed": json.dumps(plan.removed),
        "sql": f"{swap};\n{validate};",
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    with conn.engine.connect() as own:
        own = own.execution_options(isolation_level="AUTOCOMMIT")
        try:
            own.exec_driver_sql(f"BEGIN; SET LOCAL synchronous_commit = off; {_RECORD}", params)
            own.exec_driver_sql(f"{swap}; COMMIT")
        except Exception:
            try:  # the failed statement left its transaction block open on the server
                own.exec_driver_sql("ROLLBACK")
            except Exception:
                own.invalidate()
            raise


def annotate(conn: Connection, plan: Plan) -> None:
    """Store the allowed set in the constraint's comment (what `read_state` reads without
    locking the table), with the md5 of its parsed expression, and the comment in the history
    row's SQL; in the caller's transaction. COMMENT takes SHARE UPDATE EXCLUSIVE: writers
    never wait for it (it may wait, up to the lock timeout, for a VACUUM or an index build).
    Until it runs (a migrator killed right after the swap), `read_state` prints the
    expression instead."""
    swap, validate = ddl_statements(plan)
    digest = conn.execute(
        text(
            "SELECT md5(conbin::text) FROM pg_constraint"
            f" WHERE conrelid = to_regclass('{TABLE}') AND conname = '{NAME}'"
        )
    ).scalar_one()
    comment = comment_sql(plan, digest)
    conn.execute(text(comment))
    conn.execute(
        text("UPDATE prosaas_job_type_migrations SET sql = :sql WHERE number = :n"),
        {"sql": f"{swap};\n{comment};\n{validate};", "n": plan.number},
    )


def swap_postgres(conn: Connection, plan: Plan) -> None:
    """`swap_ddl`, then `annotate` in the caller's transaction."""
    swap_ddl(conn, plan)
    annotate(conn, plan)


def validate_postgres(conn: Connection) -> None:
    """Check the existing rows: takes SHARE UPDATE EXCLUSIVE, which writers do not wait for."""
    conn.execute(text(ddl_statements(Plan(allowed=[]))[1]))


def swap_sqlite(conn: Connection, plan: Plan, state: ConstraintState) -> None:
    """Rebuild background_jobs with the new constraint (Alembic batch mode) + the history row."""
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext

    if plan.number is None:
        plan.number = next_number(conn) + 1
    ops = Operations(MigrationContext.configure(conn, opts={"render_as_batch": True}))
    with ops.batch_alter_table(TABLE, recreate="always") as batch:
        if state.allowed is not None:
            batch.drop_constraint(NAME, type_="check")
        batch.create_check_constraint(NAME, text(check_sql(plan.allowed)))
    record(conn, plan, sqlite_sql(plan))


def sqlite_sql(plan: Plan) -> str:
    return (
        f"-- SQLite: {TABLE} rebuilt by Alembic batch mode (copy, drop, rename) with\n"
        f"CONSTRAINT {NAME} CHECK ({check_sql(plan.allowed)});"
    )
