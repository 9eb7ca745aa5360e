"""The plugin's own tables (created by its Alembic branch ``broadcast``), as Core tables.

The core's ``leads`` table is read through `prosaas_core.leads` and the core model; nothing
here alters a core table.
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
from sqlalchemy.dialects.postgresql import JSONB

Id = BigInteger().with_variant(Integer(), "sqlite")
Json = JSON().with_variant(JSONB(), "postgresql")

BROADCAST_STATUSES = ("scheduled", "queued", "preparing", "sending", "succeeded", "cancelled")
FINAL_BROADCAST = ("succeeded", "cancelled", "failed")
RECIPIENT_STATUSES = ("pending", "sending", "sent", "delivered", "failed", "skipped")
SKIP_REASONS = ("invalid_phone", "no_phone", "opted_out", "duplicate", "cancelled")

metadata = MetaData()


def _ts(name: str) -> Column:
    return Column(name, DateTime(timezone=True))


broadcasts = Table(
    "broadcasts",
    metadata,
    Column("id", Id, primary_key=True),
    Column("business_id", BigInteger, nullable=False),
    Column("job_id", BigInteger, unique=True),
    Column("channel", String(16), nullable=False),
    Column("template", Text, nullable=False),
    Column("provider", String(64), nullable=False),
    Column("rate", Float),
    Column("selection", Json, nullable=False),
    Column("status", String(16), nullable=False),
    Column("cancel_requested", Boolean, nullable=False),
    Column("total", Integer),
    Column("parts", Integer),
    Column("error", Text),
    _ts("scheduled_at"),
    _ts("created_at"),
    _ts("started_at"),
    _ts("finished_at"),
)

recipients = Table(
    "broadcast_recipients",
    metadata,
    Column("id", Id, primary_key=True),
    Column("broadcast_id", BigInteger, nullable=False),
    Column("business_id", BigInteger, nullable=False),
    Column("lead_id", BigInteger, nullable=False),
    Column("phone", String(32)),
    Column("body", Text),
    Column("status", String(16), nullable=False),
    Column("skip_reason", String(32)),
    Column("provider_message_id", String(128)),
    Column("error", Text),
    Column("attempts", Integer, nullable=False),
    Column("attempt_token", String(32)),
    _ts("next_attempt_at"),
    _ts("sending_since"),
    _ts("sent_at"),
    _ts("delivered_at"),
    _ts("created_at"),
    _ts("updated_at"),
)

opt_outs = Table(
    "broadcast_opt_outs",
    metadata,
    Column("business_id", BigInteger, primary_key=True),
    Column("phone", String(32), primary_key=True),
    Column("source", String(64)),
    _ts("created_at"),
)
