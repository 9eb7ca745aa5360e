"""The ``enqueue_outbound_calls`` payload (also the body of ``POST /api/outbound-calls``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from prosaas_core.leads import LeadSelection
from prosaas_outbound_calls.phones import strict_e164

RETRYABLE: tuple[Literal["busy", "no-answer"], ...] = ("busy", "no-answer")


class RetryPolicy(BaseModel):
    """How often a target that was busy or did not answer is called again."""

    model_config = ConfigDict(extra="forbid")

    #: calls per target in all, the first included (1 = no retry)
    attempts: int = Field(default=1, ge=1, le=5)
    #: seconds between one attempt's end and the next
    spacing_seconds: float = Field(default=300.0, ge=0, le=86_400)
    on: list[Literal["busy", "no-answer"]] = Field(
        default_factory=lambda: list(RETRYABLE), max_length=2
    )


class OutboundCalls(LeadSelection):
    """Which leads to call (``lead_ids``, ``filter`` or ``all: true``) and how."""

    caller_id: str = Field(max_length=16, description="E.164; one of the business's numbers")
    twiml_url: str | None = Field(
        default=None, max_length=2000, description="TwiML for the call; default from settings"
    )
    max_concurrent: int | None = Field(
        default=None, ge=1, le=1000, description="live calls at once; the business cap at most"
    )
    calls_per_second: float | None = Field(
        default=None, gt=0, le=100, description="call starts per second; the business cap at most"
    )
    record: bool = False
    machine_detection: Literal["Enable", "DetectMessageEnd"] | None = None
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    name: str | None = Field(default=None, max_length=200)

    @field_validator("caller_id")
    @classmethod
    def _e164(cls, value: str) -> str:
        return strict_e164(value)

    @field_validator("twiml_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL")
        return value


class OutboundCallsRequest(OutboundCalls):
    """The API body: the payload plus ``dry_run`` (preview only, nothing enqueued)."""

    dry_run: bool = False
