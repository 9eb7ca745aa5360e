"""The core blueprint: jobs (provisional: issue #4 grows it)."""

from __future__ import annotations

from flask import Blueprint, jsonify

from prosaas_core.api.support import ApiError, authenticated, current_business_id, current_runtime
from prosaas_core.models import BackgroundJob

bp = Blueprint("prosaas_core", __name__)


@bp.get("/api/jobs/<int:job_id>")
@authenticated
def get_job(job_id: int):
    """One job of the caller's business."""
    with current_runtime().session() as s:
        job = s.get(BackgroundJob, job_id)
        if job is None or job.business_id != current_business_id():
            raise ApiError(404, "Not found", f"job {job_id} not found")
        return jsonify(
            {
                "id": job.id,
                "job_type": job.job_type,
                "status": job.status,
                "processed": job.processed,
                "total": job.total,
                "result": job.result,
                "error": job.error,
            }
        )
