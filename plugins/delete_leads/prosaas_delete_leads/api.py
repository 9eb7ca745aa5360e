"""HTTP: ``POST /api/leads/bulk-delete`` and ``POST /api/imports/<import_id>/delete``.

Both answer 202 with the job (``{id, status, job_type}``, ``Location`` to poll), 409 with the
active job when one of the same type already runs for the business, 400 for a bad selection.
"""

from __future__ import annotations

import logging

from flask import Blueprint
from pydantic import BaseModel

from prosaas_core.api import (
    ApiError,
    authenticated,
    current_business_id,
    current_runtime,
    enqueue_job,
    parse_json,
)
from prosaas_core.api.openapi import describe
from prosaas_core.api.schemas import Enqueued, Error
from prosaas_delete_leads.jobs import DeleteLeads

_ACCEPTED: dict[int, tuple[str, type[BaseModel]]] = {
    202: ("Job accepted (Location: the job)", Enqueued),
    409: ("The same job already runs for the business; details carry its id", Error),
}

log = logging.getLogger("prosaas.plugins.delete_leads")

bp = Blueprint("delete_leads", __name__)


def _enqueue(job_type: str, payload: dict, what: str):
    business_id = current_business_id()
    log.info("Creating bulk delete job: %s (tenant=%s)", what, business_id)
    resp = enqueue_job(job_type, payload)
    log.info("Enqueued RQ job for bulk delete, job_id=%s", resp.get_json()["id"])
    return resp


@bp.post("/api/leads/bulk-delete")
@authenticated
@describe(body=DeleteLeads, responses=_ACCEPTED, tags=["leads"])
def bulk_delete():
    """Delete leads of the caller's business in the background: ``{"lead_ids": [...]}``,
    ``{"filter": {...}}`` or ``{"all": true}``."""
    selection = parse_json(DeleteLeads)
    return _enqueue(
        "delete_leads", selection.model_dump(mode="json", exclude_none=True), selection.describe()
    )


@bp.post("/api/imports/<id:import_id>/delete")
@authenticated
@describe(responses=_ACCEPTED, tags=["leads"])
def delete_import(import_id: int):
    """Delete every lead of one of the caller's imports in the background (404 for an import
    that is not the caller's)."""
    from prosaas_core.leads import import_exists

    with current_runtime().session() as s:
        if not import_exists(s, current_business_id(), import_id):
            raise ApiError(404, "Not found", f"import {import_id} not found")
    return _enqueue(
        "delete_imported_leads", {"import_id": import_id}, f"leads of import {import_id}"
    )
