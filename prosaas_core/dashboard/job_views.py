"""Jobs: the filtered list, one job, cancel and retry, and the JSON the pages poll."""

from __future__ import annotations

from flask import abort, g, jsonify, redirect, render_template, request, url_for

from prosaas_core.dashboard import bp, queries
from prosaas_core.dashboard.session import runtime
from prosaas_core.jobs import control
from prosaas_core.models import JOB_STATUSES

#: the largest id a job can have (BIGINT); a larger one in a URL is simply not found
MAX_ID = 2**63 - 1
#: longest payload/result/state shown on the job page before it is cut
MAX_SHOWN = 20_000


def _filter() -> queries.JobFilter:
    try:
        return queries.parse_filter(request.args, admin=g.viewer.admin)
    except queries.FilterError as exc:
        abort(400, str(exc))


@bp.route("/jobs")
def jobs():
    rt = runtime()
    f = _filter()
    rows, cursor = queries.list_jobs(rt, f, g.viewer.scope)
    return render_template(
        "dashboard/jobs.html",
        page="jobs",
        rows=rows,
        f=f,
        next_args=f.query_args(before=cursor) if cursor else None,
        first_args=f.query_args(before=None),
        statuses=JOB_STATUSES,
        job_types=sorted(rt.registry.job_types),
        queues=rt.registry.queues,
        since_choices=list(queries.SINCE),
    )


@bp.route(f"/jobs/<int(max={MAX_ID}):job_id>")
def job(job_id: int):
    import json

    rt = runtime()
    full = control.get_job(rt, job_id, business_id=g.viewer.scope)  # 404 for another business
    row = queries.poll_jobs(rt, [job_id], g.viewer.scope)[0]

    def shown(value: object) -> str | None:
        if value is None:
            return None
        text = json.dumps(value, indent=2, sort_keys=True, default=str)
        return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + "\n… (cut)"

    return render_template(
        "dashboard/job.html",
        page="jobs",
        job=full,
        row=row,
        payload=shown(full["payload"]),
        result=shown(full["result"]),
        state=shown(full["state"]),
        can_cancel=full["status"] in ("queued", "running") and not full["cancel_requested"],
        can_retry=full["status"] in control.RETRYABLE,
        message=_DONE.get(request.args.get("done", "")),
    )


_DONE = {"cancel": "Cancel requested.", "retry": "Queued again."}


@bp.route(f"/jobs/<int(max={MAX_ID}):job_id>/cancel", methods=["POST"])
def cancel(job_id: int):
    control.cancel_job(runtime(), job_id, business_id=g.viewer.scope)
    return redirect(url_for("dashboard.job", job_id=job_id, done="cancel"), code=303)


@bp.route(f"/jobs/<int(max={MAX_ID}):job_id>/retry", methods=["POST"])
def retry(job_id: int):
    control.retry_job(runtime(), job_id, business_id=g.viewer.scope)
    return redirect(url_for("dashboard.job", job_id=job_id, done="retry"), code=303)


@bp.route("/api/jobs")
def poll():
    """``?ids=1,2,3`` (at most 100): the live fields of those jobs the viewer may see."""
    raw = request.args.get("ids", "")
    if len(raw) > 2200:
        abort(400, "too many ids")
    parts = [p for p in raw.split(",") if p.strip()]
    if len(parts) > queries.MAX_POLL_IDS or not all(p.strip().isdigit() for p in parts):
        abort(400, f"ids must be up to {queries.MAX_POLL_IDS} comma-separated job ids")
    ids = [int(p) for p in parts if int(p) < 2**63]
    return jsonify({"jobs": queries.poll_jobs(runtime(), ids, g.viewer.scope)})
