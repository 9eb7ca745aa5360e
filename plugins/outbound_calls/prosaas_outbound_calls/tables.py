"""The tables the plugin reads and writes.

The ``outbound_*`` tables are the plugin's own (its Alembic branch ``outbound_calls``); ``calls``,
``leads``, ``businesses`` and ``background_jobs`` belong to the core, so only the columns used
here are named, as lightweight table clauses.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy import column as col
from sqlalchemy import table as tbl

#: campaign states: running (dialing, or still preparing targets), paused, cancelled,
#: completed, failed (the preparing job found it invalid)
CAMPAIGN_STATES = ("running", "paused", "cancelled", "completed", "failed")
#: target statuses: waiting, claimed (calls.create in flight), a call live, its outcome,
#: skipped (see skip_reason) or cancelled with its campaign before it was dialed
TARGET_STATUSES = (
    "pending",
    "dialing",
    "live",
    "completed",
    "busy",
    "no-answer",
    "failed",
    "canceled",
    "skipped",
    "cancelled",
)
OPEN_STATUSES = ("pending", "dialing", "live")
SKIP_REASONS = ("invalid_number", "do_not_call", "duplicate")

metadata = MetaData()
Id = BigInteger().with_variant(Integer(), "sqlite")

campaigns = Table(
    "outbound_campaigns",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=False),  # the preparing job's id
    Column("business_id", BigInteger, nullable=False),
    Column("name", String(200)),
    Column("state", String(16), nullable=False),
    Column("prepared", Boolean, nullable=False),
    Column("caller_id", String(32), nullable=False),
    Column("twiml_url", Text, nullable=False),
    Column("max_concurrent", Integer, nullable=False),
    Column("calls_per_second", Float, nullable=False),
    Column("record", Boolean, nullable=False),
    Column("machine_detection", String(32)),
    Column("retry_attempts", Integer, nullable=False),
    Column("retry_spacing", Float, nullable=False),
    Column("retry_on", String(64), nullable=False),
    Column("selection", JSON),
    Column("total_leads", Integer, nullable=False),
    Column("to_call", Integer, nullable=False),
    Column("skipped_invalid", Integer, nullable=False),
    Column("skipped_dnc", Integer, nullable=False),
    Column("skipped_duplicate", Integer, nullable=False),
    Column("error", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
)

targets = Table(
    "outbound_targets",
    metadata,
    Column("id", Id, primary_key=True),
    Column("campaign_id", BigInteger, nullable=False),
    Column("business_id", BigInteger, nullable=False),
    Column("lead_id", BigInteger),
    Column("raw_phone", String(32)),
    Column("phone", String(32)),
    Column("status", String(16), nullable=False),
    Column("skip_reason", String(32)),
    Column("call_sid", String(64)),
    Column("call_status", String(32)),
    Column("attempts", Integer, nullable=False),
    Column("attempt_token", String(32)),
    Column("slot_token", String(32)),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("claimed_at", DateTime(timezone=True)),
    Column("dialed_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("answered_by", String(32)),
    Column("duration", Integer),
    Column("error", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

do_not_call = Table(
    "outbound_do_not_call",
    metadata,
    Column("business_id", BigInteger, primary_key=True),
    Column("phone", String(32), primary_key=True),
    Column("reason", String(200)),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

caller_ids = Table(
    "outbound_caller_ids",
    metadata,
    Column("business_id", BigInteger, primary_key=True),
    Column("phone", String(32), primary_key=True),
    Column("label", String(200)),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

business_limits = Table(
    "outbound_business_limits",
    metadata,
    Column("business_id", BigInteger, primary_key=True),
    Column("max_concurrent", Integer),
    Column("max_calls_per_second", Float),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


def _core_leads():
    from prosaas_core.models import Lead

    return Lead.__table__


calls = tbl(
    "calls",
    col("id"),
    col("business_id"),
    col("call_sid"),
    col("lead_id"),
    col("direction"),
    col("status"),
    col("from_number"),
    col("to_number"),
    col("created_at"),
    col("updated_at"),
)
#: the core's leads table itself: `prosaas_core.leads` batches build their WHERE clauses on it
leads = _core_leads()
businesses = tbl("businesses", col("id"))
background_jobs = tbl(
    "background_jobs", col("id"), col("business_id"), col("job_type"), col("status"), col("error")
)
