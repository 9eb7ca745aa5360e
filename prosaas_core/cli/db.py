"""``prosaas db``: schema migrations and the generated chk_job_type constraint.

Exit codes of ``db upgrade``: 0 done (or skipped with --skip-if-locked), 1 error,
3 the migration lock stayed busy for --lock-wait seconds, 4 the tables stayed locked by other
transactions for the whole DDL budget (PROSAAS_MIGRATION_DDL_BUDGET).
"""

from __future__ import annotations

import click
from sqlalchemy.exc import OperationalError

from prosaas_core.cli.common import UserError, echo_json, pass_runtime
from prosaas_core.errors import first_line
from prosaas_core.runtime import Runtime

#: ``db upgrade`` exit code when the migration lock wait ran out
EXIT_LOCK_TIMEOUT = 3
#: ``db upgrade`` exit code when DDL kept hitting lock_timeout for the whole budget
EXIT_DDL_BUDGET = 4


@click.group()
def db() -> None:
    """Schema migrations and the generated chk_job_type constraint."""


@db.command()
@click.option(
    "--lock-wait",
    type=click.FloatRange(min=0),
    default=None,
    metavar="S",
    help="Seconds to wait for the migration lock (default PROSAAS_MIGRATION_LOCK_WAIT, 120).",
)
@click.option(
    "--skip-if-locked",
    is_flag=True,
    help="If the lock stays busy, exit 0 when the schema is already current (API start-up).",
)
@pass_runtime
def upgrade(rt: Runtime, lock_wait: float | None, skip_if_locked: bool) -> None:
    """Upgrade every schema branch, then chk_job_type, under the migration lock.

    Exits 3 when the lock wait runs out, 4 when busy tables exhaust the DDL budget.
    """
    from prosaas_core import migrate

    try:
        result = migrate.upgrade(rt, lock_wait=lock_wait, skip_if_locked=skip_if_locked)
    except migrate.MigrationLockTimeout as exc:
        raise UserError(str(exc), exit_code=EXIT_LOCK_TIMEOUT) from None
    except migrate.DdlLockBudgetExceeded as exc:
        raise UserError(str(exc), exit_code=EXIT_DDL_BUDGET) from None
    except OperationalError as exc:
        raise UserError(f"database error: {first_line(exc)}") from None
    if result.skipped:
        click.echo("skipped: another migrator holds the lock and the schema is already current")
    elif result.changed:
        parts = []
        if result.revisions:
            parts.append(f"applied {', '.join(result.revisions)}")
        if result.migration is not None:
            parts.append(f"chk_job_type migration {result.migration}")
        click.echo("upgraded: " + "; ".join(parts))
    else:
        click.echo("up to date")


@db.command()
@pass_runtime
def check(rt: Runtime) -> None:
    """Exit 0 when schema and chk_job_type match the installed plugins, else 1 and one line
    per difference."""
    from prosaas_core import migrate

    try:
        lines = migrate.drift(rt)
    except OperationalError as exc:
        raise UserError(f"database error: {first_line(exc)}") from None
    if lines:
        for line in lines:
            click.echo(line)
        raise SystemExit(1)
    click.echo("ok: schema and chk_job_type match the installed plugins")


@db.command()
@pass_runtime
def sql(rt: Runtime) -> None:
    """Print the SQL `db upgrade` would run now, running nothing."""
    from prosaas_core import migrate

    click.echo(migrate.plan_sql(rt), nl=False)


@db.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@pass_runtime
def history(rt: Runtime, as_json: bool) -> None:
    """List the numbered chk_job_type migrations."""
    from prosaas_core import migrate

    rows = migrate.history(rt)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no chk_job_type migration yet: run `prosaas db upgrade`")
    for r in rows:
        click.echo(
            f"Migration {r['number']}  {r['applied_at']}  {r['host']}:{r['pid']}  "
            f"added: {', '.join(r['added']) or '-'}  removed: {', '.join(r['removed']) or '-'}"
        )
