"""SQLAlchemy 2 models of the core tables. Every business-owned row carries ``business_id``.

The schema itself is created by Alembic (``prosaas_core/migrations``); ``chk_job_type`` is not
declared here because it is generated from the installed plugins (``prosaas_core.migrate``).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
ACTIVE_STATUSES = ("queued", "running")
FINAL_STATUSES = ("succeeded", "failed", "cancelled")

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets 64-bit ids.
Id = BigInteger().with_variant(Integer(), "sqlite")
Json = JSON().with_variant(JSONB(), "postgresql")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    #: declared as what it is, a Table (SQLAlchemy types it as any FromClause), so that
    #: ``update(Model.__table__)`` and ``Model.__table__.insert()`` type-check
    __table__: ClassVar[Table]


def _now() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class Business(Base):
    __tablename__ = "businesses"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = _now()


class ApiToken(Base):
    """A bearer token scoped to one business. Only the SHA-256 of the token is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    business_id: Mapped[int] = mapped_column(
        ForeignKey("businesses.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(12))
    name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = _now()
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class LeadImport(Base):
    """One CSV import: its leads point back to it, so they can be deleted together."""

    __tablename__ = "lead_imports"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    business_id: Mapped[int] = mapped_column(
        ForeignKey("businesses.id", ondelete="CASCADE"), index=True
    )
    filename: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), server_default="completed")
    total_rows: Mapped[int] = mapped_column(Integer, server_default="0")
    imported_rows: Mapped[int] = mapped_column(Integer, server_default="0")
    failed_rows: Mapped[int] = mapped_column(Integer, server_default="0")
    errors: Mapped[Any | None] = mapped_column(Json)
    created_at: Mapped[datetime] = _now()
    #: a large import's ``import_leads`` job (None for one imported within its request)
    job_id: Mapped[int | None] = mapped_column(Id)
    #: a large import's header, column name -> index: how its job reads the staged rows
    columns: Mapped[Any | None] = mapped_column(Json)


class LeadImportChunk(Base):
    """A slice of a large import's CSV (whole records, as uploaded) waiting for its job.

    Deleted in the transaction that imports it, so an attempt killed at any instant resumes at
    the first chunk not yet imported; whatever is left goes when the job ends."""

    __tablename__ = "lead_import_chunks"
    __table_args__ = (Index("ix_lead_import_chunks_import_id_id", "import_id", "id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    import_id: Mapped[int] = mapped_column(ForeignKey("lead_imports.id", ondelete="CASCADE"))
    #: line number (in the uploaded file) of the chunk's first line
    first_line: Mapped[int] = mapped_column(Integer)
    #: records in the chunk, blank ones included
    rows: Mapped[int] = mapped_column(Integer)
    #: the records as zlib-compressed UTF-8 (bytes: PostgreSQL text cannot hold a NUL, which a
    #: bad row may carry and must be reported like any bad row)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Lead(Base):
    __tablename__ = "leads"
    __table_args__ = (
        # Bulk jobs page through one business's leads by id, filtered by these columns.
        Index("ix_leads_business_id_id", "business_id", "id"),
        Index("ix_leads_business_id_status", "business_id", "status"),
        Index("ix_leads_business_id_source", "business_id", "source"),
        Index("ix_leads_business_id_import_id", "business_id", "import_id"),
        Index("ix_leads_business_id_created_at", "business_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    business_id: Mapped[int] = mapped_column(ForeignKey("businesses.id", ondelete="CASCADE"))
    name: Mapped[str | None] = mapped_column(String(200))
    phone: Mapped[str | None] = mapped_column(String(32))
    email: Mapped[str | None] = mapped_column(String(254))
    status: Mapped[str] = mapped_column(String(32), server_default="new")
    source: Mapped[str | None] = mapped_column(String(64))
    import_id: Mapped[int | None] = mapped_column(
        ForeignKey("lead_imports.id", ondelete="SET NULL")
    )
    owner: Mapped[str | None] = mapped_column(String(200))
    tags: Mapped[Any | None] = mapped_column(Json)
    notes: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class Call(Base):
    """A phone call. Deleting its lead detaches the call (``lead_id`` NULL); history stays."""

    __tablename__ = "calls"
    __table_args__ = (
        Index("ix_calls_business_id_id", "business_id", "id"),
        Index("ix_calls_lead_id", "lead_id"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    business_id: Mapped[int] = mapped_column(ForeignKey("businesses.id", ondelete="CASCADE"))
    call_sid: Mapped[str] = mapped_column(String(64), unique=True)
    lead_id: Mapped[int | None] = mapped_column(ForeignKey("leads.id", ondelete="SET NULL"))
    direction: Mapped[str] = mapped_column(String(16), server_default="inbound")
    status: Mapped[str | None] = mapped_column(String(32))
    from_number: Mapped[str | None] = mapped_column(String(32))
    to_number: Mapped[str | None] = mapped_column(String(32))
    recording_sid: Mapped[str | None] = mapped_column(String(64))
    recording_url: Mapped[str | None] = mapped_column(Text)
    recording_status: Mapped[str | None] = mapped_column(String(32))
    recording_path: Mapped[str | None] = mapped_column(Text)
    recording_bytes: Mapped[int | None] = mapped_column(BigInteger)
    recording_duration: Mapped[int | None] = mapped_column(Integer)
    recording_error: Mapped[str | None] = mapped_column(Text)
    transcript: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class BackgroundJob(Base):
    """One job. This row, not Redis, is the source of truth for the job's state."""

    __tablename__ = "background_jobs"
    __table_args__ = (
        CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')", name="status"
        ),
        Index("ix_background_jobs_business_id_created_at", "business_id", "created_at"),
        # 0006_history: a business's jobs, by status, by type; types; the active rows
        Index("ix_background_jobs_business_id_id", "business_id", "id"),
        Index("ix_background_jobs_business_status_id", "business_id", "status", "id"),
        Index("ix_background_jobs_business_type_id", "business_id", "job_type", "id"),
        Index("ix_background_jobs_job_type_id", "job_type", "id"),
        Index(
            "ix_background_jobs_active",
            "status",
            "job_type",
            "queue",
            postgresql_where=text("status IN ('queued', 'running')"),
            sqlite_where=text("status IN ('queued', 'running')"),
        ),
        # One active job per (business, unique_key): how unique_per_business is enforced.
        Index(
            "ix_background_jobs_parked",
            "job_type",
            "business_id",
            "id",
            postgresql_where=text("parked IS NOT NULL AND status = 'queued'"),
            sqlite_where=text("parked IS NOT NULL AND status = 'queued'"),
        ),
        Index(
            "uq_background_jobs_active_unique_key",
            "business_id",
            "unique_key",
            unique=True,
            postgresql_where=text("status IN ('queued', 'running') AND unique_key IS NOT NULL"),
            sqlite_where=text("status IN ('queued', 'running') AND unique_key IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    business_id: Mapped[int] = mapped_column(ForeignKey("businesses.id", ondelete="CASCADE"))
    job_type: Mapped[str] = mapped_column(String(63))
    queue: Mapped[str] = mapped_column(String(63), server_default="default")
    status: Mapped[str] = mapped_column(String(16), server_default="queued")
    payload: Mapped[Any | None] = mapped_column(Json)
    result: Mapped[Any | None] = mapped_column(Json)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    max_attempts: Mapped[int] = mapped_column(Integer, server_default="3")
    processed: Mapped[int] = mapped_column(BigInteger, server_default="0")
    total: Mapped[int | None] = mapped_column(BigInteger)
    state: Mapped[Any | None] = mapped_column(Json)
    unique_key: Mapped[str | None] = mapped_column(String(200))
    worker: Mapped[str | None] = mapped_column(String(200))
    #: fencing token: bumped on every claim; a write carrying an older token is refused
    fence: Mapped[int] = mapped_column(Integer, server_default="0")
    cancel_requested: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    #: earliest time a retry may run (exponential backoff), or when a parked job is looked at
    run_after: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: why a queued job waits outside Redis for a slot or a rate window (NULL: not parked)
    parked: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class FlowLimit(Base):
    """A per-business override of a job type's flow limits (a bigger plan, a throttled
    tenant). NULL keeps the job type's own value."""

    __tablename__ = "prosaas_flow_limits"

    business_id: Mapped[int] = mapped_column(
        ForeignKey("businesses.id", ondelete="CASCADE"), primary_key=True
    )
    job_type: Mapped[str] = mapped_column(String(63), primary_key=True)
    concurrency: Mapped[int | None] = mapped_column(Integer)
    rate: Mapped[str | None] = mapped_column(String(32))
    updated_at: Mapped[datetime] = _now()


class ScheduleRow(Base):
    """A schedule: an operator's or a business's (full definition), or a plugin's (only the
    row that holds its paused flag and when it was first seen; the definition is the code's).
    Names are unique per owner: each business's own, and one space for plugins and operators."""

    __tablename__ = "prosaas_schedules"
    __table_args__ = (
        Index(
            "uq_prosaas_schedules_owner_name",
            text("coalesce(business_id, 0)"),
            "name",
            unique=True,
        ),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    source: Mapped[str] = mapped_column(String(16))  # plugin | operator | business
    business_id: Mapped[int | None] = mapped_column(ForeignKey("businesses.id", ondelete="CASCADE"))
    cron: Mapped[str | None] = mapped_column(String(120))
    job_type: Mapped[str | None] = mapped_column(String(63))
    payload: Mapped[Any | None] = mapped_column(Json)
    per_business: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    timezone: Mapped[str] = mapped_column(String(64), server_default="UTC")
    catch_up: Mapped[str] = mapped_column(String(8), server_default="skip")
    jitter: Mapped[float] = mapped_column(Float, server_default="0")
    paused: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    #: the latest occurrence the scheduler has dealt with (fired, or skipped by catch-up)
    fired_through: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class ScheduleRun(Base):
    """One fired occurrence of a schedule (per business for per-business schedules): the
    unique key is what makes an occurrence fire exactly once, whoever fires it."""

    __tablename__ = "prosaas_schedule_runs"
    __table_args__ = (
        Index(
            "uq_prosaas_schedule_runs_occurrence",
            "schedule_id",
            "occurrence_at",
            "business_id",
            unique=True,
        ),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    schedule_id: Mapped[int] = mapped_column(ForeignKey("prosaas_schedules.id", ondelete="CASCADE"))
    occurrence_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    #: the business the occurrence fired for (the schedule's own one for a business schedule)
    business_id: Mapped[int] = mapped_column(BigInteger)
    job_id: Mapped[int | None] = mapped_column(BigInteger)
    fired_at: Mapped[datetime] = _now()
    fired_by: Mapped[str | None] = mapped_column(String(200))


class JobTypeMigration(Base):
    """The numbered history of changes to the generated ``chk_job_type`` constraint."""

    __tablename__ = "prosaas_job_type_migrations"

    number: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    allowed: Mapped[Any] = mapped_column(Json)
    added: Mapped[Any] = mapped_column(Json)
    removed: Mapped[Any] = mapped_column(Json)
    sql: Mapped[str] = mapped_column(Text)
    applied_at: Mapped[datetime] = _now()
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)


class JobRollup(Base):
    """Finished jobs of one day (UTC), business, type and status: what history keeps after
    the rows are pruned (``prosaas_core.jobs.history``)."""

    __tablename__ = "prosaas_job_rollups"
    __table_args__ = (Index("ix_prosaas_job_rollups_business_id_day", "business_id", "day"),)

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    business_id: Mapped[int] = mapped_column(
        ForeignKey("businesses.id", ondelete="CASCADE"), primary_key=True
    )
    job_type: Mapped[str] = mapped_column(String(63), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), primary_key=True)
    #: finished jobs; those of them that ran (had a start); their run time in seconds
    jobs: Mapped[int] = mapped_column(BigInteger)
    ran: Mapped[int] = mapped_column(BigInteger)
    duration_sum: Mapped[float] = mapped_column(Float)
    duration_max: Mapped[float | None] = mapped_column(Float)


class JobTotal(Base):
    """All-time finished jobs per type and status (the rollups summed, for /metrics)."""

    __tablename__ = "prosaas_job_totals"

    job_type: Mapped[str] = mapped_column(String(63), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), primary_key=True)
    jobs: Mapped[int] = mapped_column(BigInteger)
    ran: Mapped[int] = mapped_column(BigInteger)
    duration_sum: Mapped[float] = mapped_column(Float)
    #: run times per bucket of ``history.BUCKETS`` (not cumulative; the last one is +Inf)
    buckets: Mapped[Any] = mapped_column(Json)


class RollupState(Base):
    """One row: finished jobs with ``finished_at`` before ``rolled_through`` are rolled up."""

    __tablename__ = "prosaas_rollup_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    rolled_through: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = _now()
