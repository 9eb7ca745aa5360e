"""History: finished jobs per day, job type and status over the last N days, and totals.

Read through ``prosaas_core.jobs.history.daily`` (the rollups of settled days plus the rows
past the rollup watermark), so a job keeps counting here after retention has pruned its row,
exactly like ``prosaas jobs stats`` and ``/metrics``. A business sees its own business; an
operator every business, or one with ``?business=ID``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import abort, g, jsonify, render_template, request

from prosaas_core.dashboard import bp, charts
from prosaas_core.dashboard.session import runtime
from prosaas_core.models import FINAL_STATUSES

#: the windows the page offers; any whole number of days up to MAX_DAYS is accepted
DAY_CHOICES = (7, 30, 90)
MAX_DAYS = 366


def _args() -> tuple[int, int | None]:
    """(days, business id to read or None for all): bad values are a 400."""
    raw = (request.args.get("days") or "30").strip()
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_DAYS:
        abort(400, f"days must be a whole number from 1 to {MAX_DAYS}")
    business = (request.args.get("business") or "").strip()
    if not g.viewer.admin or not business:
        return int(raw), g.viewer.scope  # a business viewer reads its own business only
    if not business.isdigit() or int(business) > 2**63 - 1:
        abort(400, "business must be a positive whole number")
    return int(raw), int(business)


def history_data() -> dict[str, Any]:
    from prosaas_core.jobs.history import Figures, daily, summary
    from prosaas_core.jobs.store import utcnow

    days, business_id = _args()
    groups = daily(runtime(), business_id=business_id, days=days)
    today = utcnow().date()
    first = today - timedelta(days=days - 1)
    labels = [(first + timedelta(days=i)).isoformat() for i in range(days)]
    counts: list[dict[str, int]] = [{s: 0 for s in FINAL_STATUSES} for _ in labels]
    series: dict[str, list[int]] = {}
    totals: dict[tuple[str, str], Figures] = {}
    for (day, job_type, status), f in groups.items():
        i = (day - first).days
        if not 0 <= i < days:  # a clock a little ahead of the database's: not in the window
            continue
        counts[i][status] += f.jobs
        series.setdefault(job_type, [0] * days)[i] += f.jobs
        totals.setdefault((job_type, status), Figures()).add(f)
    return {
        "days": days,
        "business_id": business_id,
        "first_day": labels[0],
        "per_day": [{"day": d, **n} for d, n in zip(labels, counts, strict=True)],
        "series": dict(sorted(series.items())),
        "totals": [summary(t, s, f) for (t, s), f in sorted(totals.items())],
    }


def _chart(data: dict[str, Any]) -> dict[str, Any]:
    labels = [d["day"] for d in data["per_day"]]
    return charts.stacked_bars({"minutes": data["days"], "series": data["series"]}, labels)


@bp.route("/history")
def history():
    data = history_data()
    return render_template(
        "dashboard/history.html",
        page="history",
        chart=_chart(data),
        day_choices=DAY_CHOICES,
        **data,
    )


@bp.route("/api/history")
def history_json():
    """The page's data as JSON: ``{days, business_id, first_day, per_day: [{day, succeeded,
    failed, cancelled}], series: {job_type: [n per day]}, totals: [{job_type, status, jobs,
    avg_seconds, max_seconds}]}``."""
    return jsonify(history_data())
