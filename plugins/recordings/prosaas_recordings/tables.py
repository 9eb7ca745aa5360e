"""The tables the plugin reads and writes.

``recording_tasks`` is the plugin's own (created by its Alembic branch); ``calls`` and
``businesses`` belong to the core, which exposes them in its public ``prosaas_core.store``.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Integer, MetaData, String, Table, Text

from prosaas_core.store import businesses as core_businesses
from prosaas_core.store import calls as core_calls

TASK_STATUSES = ("queued", "running", "done", "failed")

metadata = MetaData()

#: one durable download per Twilio recording (``recording_sid`` is unique)
recording_tasks = Table(
    "recording_tasks",
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
    Column("business_id", BigInteger, nullable=False),
    Column("call_sid", String(64), nullable=False),
    Column("recording_sid", String(64), nullable=False, unique=True),
    Column("recording_url", Text, nullable=False),
    Column("duration", Integer),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("run_after", DateTime(timezone=True), nullable=False),
    Column("lease_until", DateTime(timezone=True)),
    Column("worker", String(200)),
    Column("fence", Integer, nullable=False),
    Column("last_error", Text),
    Column("file_path", Text),
    Column("bytes", BigInteger),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
)

#: the core's tables (``prosaas_core.store``): calls are core domain, a call's recording
#: reference included (docs/architecture.md); the plugin keeps the download work in its own table
calls = core_calls
businesses = core_businesses
