"""HTTP: ``POST /api/leads/bulk-update`` (202 with the job; 400 naming a field not allowed)."""

from __future__ import annotations

import logging

from flask import Blueprint

from prosaas_core.api import authenticated, current_business_id, enqueue_job, parse_json
from prosaas_core.api.openapi import describe
from prosaas_core.api.schemas import Enqueued, Error
from prosaas_update_leads.jobs import UpdateLeads

log = logging.getLogger("prosaas.plugins.update_leads")

bp = Blueprint("update_leads", __name__)


@bp.post("/api/leads/bulk-update")
@authenticated
@describe(
    body=UpdateLeads,
    responses={
        202: ("Job accepted (Location: the job)", Enqueued),
        409: ("A bulk update already runs for the business; details carry its id", Error),
    },
    tags=["leads"],
)
def bulk_update():
    """Update leads of the caller's business in the background:
    ``{"lead_ids": [...] | "filter": {...} | "all": true, "set": {"status": "won", ...}}``."""
    payload = parse_json(UpdateLeads)
    log.info(
        "Creating bulk update job: %s, set %s (tenant=%s)",
        payload.describe(),
        ", ".join(sorted(payload.set)),
        current_business_id(),
    )
    resp = enqueue_job("update_leads", payload.model_dump(mode="json", exclude_none=True))
    log.info("Enqueued RQ job for bulk update, job_id=%s", resp.get_json()["id"])
    return resp
