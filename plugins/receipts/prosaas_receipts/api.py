"""HTTP: ``POST /api/receipts`` (record one) and ``POST /api/receipts/delete-all`` (202 + job)."""

from __future__ import annotations

import logging

from flask import Blueprint, jsonify
from pydantic import BaseModel, ConfigDict, Field

from prosaas_core.api import (
    authenticated,
    current_business_id,
    current_runtime,
    enqueue_job,
    parse_json,
)
from prosaas_core.api.openapi import describe
from prosaas_core.api.schemas import Enqueued, Error
from prosaas_core.bounds import JsonInt

log = logging.getLogger("prosaas.plugins.receipts")

bp = Blueprint("receipts", __name__)


class NewReceipt(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount_cents: JsonInt = Field(ge=0, le=2**63 - 1)
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    description: str | None = Field(default=None, max_length=2000)


class Receipt(NewReceipt):
    id: int


@bp.post("/api/receipts")
@authenticated
@describe(body=NewReceipt, responses={201: ("The receipt, recorded", Receipt)}, tags=["receipts"])
def create_receipt():
    """Record a receipt for the caller's business."""
    from sqlalchemy import text

    r = parse_json(NewReceipt)
    with current_runtime().session() as s:
        receipt_id = s.execute(
            text(
                "INSERT INTO receipts (business_id, amount_cents, currency, description)"
                " VALUES (:b, :a, :c, :d) RETURNING id"
            ),
            {"b": current_business_id(), "a": r.amount_cents, "c": r.currency, "d": r.description},
        ).scalar_one()
    resp = jsonify({"id": receipt_id, **r.model_dump()})
    resp.status_code = 201
    return resp


@bp.post("/api/receipts/delete-all")
@authenticated
@describe(
    responses={
        202: ("Job accepted (Location: the job)", Enqueued),
        409: ("A delete-all already runs for the business; details carry its id", Error),
    },
    tags=["receipts"],
)
def delete_all():
    """Delete every receipt of the caller's business in the background."""
    log.info("Creating delete-all-receipts job (tenant=%s)", current_business_id())
    resp = enqueue_job("delete_receipts_all", {})
    log.info("Enqueued RQ job for receipts deletion, job_id=%s", resp.get_json()["id"])
    return resp
