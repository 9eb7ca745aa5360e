"""HTTP: ``POST /api/receipts`` (record one) and ``POST /api/receipts/delete-all`` (202 + job)."""

from __future__ import annotations

import logging

from flask import Blueprint, jsonify
from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from prosaas_core.api import (
    ApiError,
    authenticated,
    current_business_id,
    current_runtime,
    enqueue_job,
    parse_json,
)

log = logging.getLogger("prosaas.plugins.receipts")

bp = Blueprint("receipts", __name__)


class NewReceipt(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount_cents: int = Field(ge=0)
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    description: str | None = Field(default=None, max_length=2000)
    lead_id: PositiveInt | None = None


@bp.post("/api/receipts")
@authenticated
def create_receipt():
    """Record a receipt for the caller's business; ``lead_id`` must be one of its leads."""
    from sqlalchemy import text

    r = parse_json(NewReceipt)
    business_id = current_business_id()
    with current_runtime().session() as s:
        if (
            r.lead_id is not None
            and not s.execute(
                text("SELECT 1 FROM leads WHERE business_id = :b AND id = :l"),
                {"b": business_id, "l": r.lead_id},
            ).first()
        ):
            raise ApiError(404, "Not found", f"lead {r.lead_id} not found")
        receipt_id = s.execute(
            text(
                "INSERT INTO receipts (business_id, lead_id, amount_cents, currency, description)"
                " VALUES (:b, :l, :a, :c, :d) RETURNING id"
            ),
            {
                "b": business_id,
                "l": r.lead_id,
                "a": r.amount_cents,
                "c": r.currency,
                "d": r.description,
            },
        ).scalar_one()
    resp = jsonify({"id": receipt_id, **r.model_dump()})
    resp.status_code = 201
    return resp


@bp.post("/api/receipts/delete-all")
@authenticated
def delete_all():
    """Delete every receipt of the caller's business in the background."""
    log.info("Creating delete-all-receipts job (tenant=%s)", current_business_id())
    resp = enqueue_job("delete_receipts_all", {})
    log.info("Enqueued RQ job for receipts deletion, job_id=%s", resp.get_json()["id"])
    return resp
