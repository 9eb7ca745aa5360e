"""Alembic environment. prosaas drives Alembic programmatically (``prosaas_core.migrate``):

- online: the connection comes in through ``config.attributes["connection"]``, already inside the
  caller's transaction (so a retry after a lock timeout rolls everything back);
- offline (``prosaas db sql``): ``config.attributes["dialect_name"]`` names the dialect and the SQL
  is written to the config's output buffer.

``config.attributes["on_version_apply"]`` (optional) lists callbacks told of each applied revision.
"""

from __future__ import annotations

from alembic import context

from prosaas_core.models import Base

attributes = context.config.attributes
callbacks = list(attributes.get("on_version_apply", ()))

if context.is_offline_mode():
    dialect_name = attributes.get("dialect_name", "postgresql")
    context.configure(
        dialect_name=dialect_name,
        target_metadata=Base.metadata,
        literal_binds=True,
        render_as_batch=dialect_name == "sqlite",
    )
else:
    connection = attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most things: batch mode recreates the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        on_version_apply=callbacks,
    )
with context.begin_transaction():
    context.run_migrations()
