"""Is the migration connection a real session, or a transaction pooler's (PgBouncer
``pool_mode=transaction``)?

Migrations hold a session-level advisory lock for their whole run (``lock.py``). Through a
transaction pooler the client's "session" is handed a different server connection at each
transaction: the lock would be taken on one backend and the DDL run on others, so two migrators
would both "hold" it. That is refused up front, before anything is locked.

The probe needs nothing from the pooler (no admin console, no version): a client session bound
to one backend always sees the same ``pg_backend_pid()``, and no other session can ever be
handed that backend while it lives. So, on connection A outside any transaction, read its pid;
open connection B and keep a transaction open on it (which pins one server connection to B);
read A's pid again. Directly connected, A's pid never changes and B's is another. Through a
transaction pooler, A's backend went back to the pool after A's statement: either B was handed
it (PgBouncer reuses the most recently released server connection first), or A is handed
another one now. The probe runs ROUNDS times, so another client racing for the same backend in
between cannot hide the pooler. Session pooling (``pool_mode=session``) pins A and passes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import Engine, text

from prosaas_core.errors import ProsaasError

if TYPE_CHECKING:
    from prosaas_core.settings import Settings

#: probe rounds; one is enough on an idle pooler, more hide nothing on a busy one
ROUNDS = 3


class TransactionPoolerError(ProsaasError):
    """The migration URL goes through a transaction pooler: the advisory lock would not hold."""


def transaction_pooled(engine: Engine) -> bool:
    """True when `engine`'s connections are not bound to one PostgreSQL backend each."""
    if engine.dialect.name != "postgresql":
        return False
    with engine.connect() as a, engine.connect() as b:
        a = a.execution_options(isolation_level="AUTOCOMMIT")
        b = b.execution_options(isolation_level="AUTOCOMMIT")
        pid = text("SELECT pg_backend_pid()")
        for _ in range(ROUNDS):
            first = a.execute(pid).scalar()
            b.exec_driver_sql("BEGIN")
            try:
                pinned = b.execute(pid).scalar()
                again = a.execute(pid).scalar()
            finally:
                b.exec_driver_sql("COMMIT")
            if pinned == first or again != first:
                return True
    return False


def refuse_transaction_pooler(settings: Settings) -> None:
    """Raise TransactionPoolerError (one line saying what to set) when migrations would run
    through a transaction pooler.

    The probe has its own engine without the migration engine's session ``SET``s: through a
    pooler those would stay on the server connection and reach the application's
    transactions."""
    from sqlalchemy.pool import NullPool

    from prosaas_core.db import is_sqlite, make_engine

    if is_sqlite(settings.migration_url):
        return
    engine = make_engine(
        settings.migration_url,
        application_name="prosaas-migrate",
        poolclass=NullPool,
        ping_idle_seconds=None,
    )
    try:
        pooled = transaction_pooled(engine)
    finally:
        engine.dispose()
    if not pooled:
        return
    if settings.migration_database_url:
        raise TransactionPoolerError(
            "DATABASE_MIGRATION_URL goes through a transaction pooler (PgBouncer "
            "pool_mode=transaction): point it at PostgreSQL itself, migrations need a session"
        )
    raise TransactionPoolerError(
        "DATABASE_URL goes through a transaction pooler (PgBouncer pool_mode=transaction) and "
        "the migration lock would be a no-op: set DATABASE_MIGRATION_URL to a direct "
        "PostgreSQL URL for `prosaas db upgrade` and RUN_MIGRATIONS"
    )
