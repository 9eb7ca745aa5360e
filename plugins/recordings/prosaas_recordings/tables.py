"""The tables the plugin reads and writes.

``recording_tasks`` is the plugin's own (created by its Alembic branch); ``calls`` and
``businesses`` belong to the core, so only the columns used here are named, as lightweight
table clauses, rather than importing the core's models.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Integer, MetaData, String, Table, Text
from sqlalchemy import column as col
from sqlalchemy import table as tbl

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

calls = tbl(
    "calls",
    col("id"),
    col("business_id"),
    col("call_sid"),
    col("direction"),
    col("status"),
    col("from_number"),
    col("to_number"),
    col("recording_sid"),
    col("recording_url"),
    col("recording_status"),
    col("recording_path"),
    col("recording_bytes"),
    col("recording_duration"),
    col("recording_error"),
    col("transcript"),
    col("created_at"),
    col("updated_at"),
)

businesses = tbl("businesses", col("id"))
