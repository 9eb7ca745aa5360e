"""Alembic environment. prosaas drives Alembic programmatically: the connection is handed in
through ``config.attributes["connection"]`` by ``prosaas_core.migrate.alembic_ops``."""

from __future__ import annotations

from alembic import context

from prosaas_core.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most things: batch mode recreates the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
