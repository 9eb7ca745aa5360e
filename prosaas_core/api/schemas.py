"""Request and response models of the core endpoints (also their OpenAPI schemas)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

from prosaas_core.bounds import MAX_ID, JsonFloat, Tags, iso_string, utc_representable

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EnqueueRequest(_Strict):
    """``POST /api/jobs``: the job type and its payload (validated by the type's model), and
    optionally when it is due: ``run_at`` (ISO 8601 with an offset) or ``delay`` (seconds)."""

    job_type: str = Field(min_length=1, max_length=63)
    payload: dict[str, Any] | None = None
    run_at: (
        Annotated[AwareDatetime, BeforeValidator(iso_string), AfterValidator(utc_representable)]
        | None
    ) = None
    delay: Annotated[JsonFloat, Field(ge=0, le=366 * 86400)] | None = None


class JobListQuery(_Strict):
    status: JobStatus | None = None
    job_type: str | None = Field(default=None, max_length=63)
    limit: int = Field(default=50, ge=1, le=200)
    before_id: int | None = Field(default=None, ge=1, le=MAX_ID)


class LeadIn(_Strict):
    """``POST /api/leads``: one lead; it needs a phone or an email."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "anyOf": [
                {"required": ["phone"], "properties": {"phone": {"type": "string"}}},
                {"required": ["email"], "properties": {"email": {"type": "string"}}},
            ]
        },
    )

    name: str | None = Field(default=None, max_length=200)
    phone: str | None = Field(default=None, max_length=64)
    email: str | None = Field(
        default=None,
        max_length=254,
        json_schema_extra={"pattern": r"^\s*[^@\s]+@[^@\s]+\.[^@\s]+\s*$"},
    )
    status: str = Field(default="new", min_length=1, max_length=32)
    source: str | None = Field(default=None, max_length=64)
    owner: str | None = Field(default=None, max_length=200)
    notes: str | None = Field(default=None, max_length=10_000)
    tags: Tags | None = None


class LeadListQuery(_Strict):
    status: str | None = Field(default=None, max_length=32)
    import_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    limit: int = Field(default=50, ge=1, le=200)
    before_id: int | None = Field(default=None, ge=1, le=MAX_ID)


class Error(BaseModel):
    """Every error answer: a short title and machine-readable details."""

    error: str
    details: Any = None


class Enqueued(BaseModel):
    id: int
    status: JobStatus
    job_type: str


class Job(BaseModel):
    """A job as ``prosaas jobs show --json`` prints it."""

    id: int
    job_type: str
    business_id: int
    queue: str
    status: JobStatus
    attempts: int
    max_attempts: int
    processed: int
    total: int | None = None
    payload: Any = None
    result: Any = None
    error: str | None = None
    state: Any = None
    worker: str | None = None
    cancel_requested: bool
    created_at: str | None = None
    updated_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    heartbeat_at: str | None = None
    run_after: str | None = None
    #: why a queued job waits for its business's concurrency slot or rate window
    parked: str | None = None


class JobPage(BaseModel):
    items: list[Job]
    next_before_id: int | None


class Lead(BaseModel):
    id: int
    name: str | None
    phone: str | None
    email: str | None
    status: str
    source: str | None
    import_id: int | None
    owner: str | None
    tags: list[str] | None
    notes: str | None
    created_at: str | None
    updated_at: str | None


class LeadPage(BaseModel):
    items: list[Lead]
    next_before_id: int | None


class RowError(BaseModel):
    line: int
    errors: list[str]


class LeadImportResult(BaseModel):
    import_id: int
    total_rows: int
    imported: int
    failed: int
    errors: list[RowError]
    errors_truncated: bool


class LeadImportQueued(BaseModel):
    """A large import, staged: its ``import_leads`` job, and the batch that job fills."""

    id: int
    status: JobStatus
    job_type: str
    import_id: int
    total_rows: int


class LeadImportSummary(BaseModel):
    """A batch: ``completed``, or for a large import ``queued``, ``running``, ``completed``,
    ``cancelled`` or ``failed`` as its job (``job_id``) goes."""

    id: int
    filename: str | None
    status: str
    total_rows: int
    imported_rows: int
    failed_rows: int
    errors: list[RowError] | None
    created_at: str | None
    job_id: int | None
