"""Overview, Workers and services, Migrations and plugins.

Overview and Workers poll ``/dashboard/api/<page>``: JSON carrying the data and the page's
live section rendered by the same template fragment, so the first paint and every update
cannot disagree. Workers and Migrations are operator pages: they describe the whole
deployment, not one business.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import abort, current_app, g, jsonify, render_template
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from prosaas_core.dashboard import bp, charts, queries
from prosaas_core.dashboard.session import runtime
from prosaas_core.errors import first_line

log = logging.getLogger("prosaas.dashboard")


def _operator_only() -> None:
    if not g.viewer.admin:
        abort(403, "this page is for operators (sign in with an admin token)")


def overview_data() -> dict[str, Any]:
    from rq import Queue

    from prosaas_core.jobs.flow import summary

    rt = runtime()
    scope = g.viewer.scope
    cache = current_app.extensions.setdefault("prosaas_dashboard_finished", queries.FinishedCache())
    finished = queries.finished_jobs(rt, scope, cache)
    queues: dict[str, dict[str, Any]] = queries.queue_counts(rt, scope, finished)
    redis_away = False  # then the flow summary (slots held) is not asked for either
    if g.viewer.admin:
        try:
            for name, item in queues.items():
                item["in_redis"] = Queue(name, connection=rt.request_redis).count
        except (RedisConnectionError, RedisTimeoutError) as exc:  # an extra: the page answers
            log.warning("dashboard: queue lengths unavailable: %s", first_line(exc))
            redis_away = True
            for item in queues.values():
                item["in_redis"] = None
    flow: list[dict[str, Any]] = []
    try:
        if not redis_away:
            flow = [r for r in summary(rt) if scope is None or r["business_id"] == scope]
    except Exception as exc:  # flow limits are an extra: never take the page down
        log.warning("dashboard: flow summary failed: %s", exc)
    return {"queues": queues, "throughput": queries.throughput(finished), "flow": flow}


@bp.route("/")
def overview():
    data = overview_data()
    return render_template("dashboard/overview.html", page="overview", chart=_chart(data), **data)


@bp.route("/api/overview")
def overview_poll():
    data = overview_data()
    html = render_template("dashboard/_overview_live.html", chart=_chart(data), **data)
    return jsonify({**data, "html": html})


def _chart(data: dict[str, Any]) -> dict[str, Any]:
    return charts.stacked_bars(data["throughput"])


def workers_data() -> dict[str, Any]:
    """Live workers from their Redis heartbeats, and the doctor's findings about queues and
    services (pending work that no live worker consumes, crash-looping services)."""
    from prosaas_core.cli.doctor import Report, check_workers
    from prosaas_core.jobs.heartbeat import live_workers

    rt = runtime()
    report = Report()
    check_workers(rt, report, db_ok=True)
    workers = live_workers(rt)
    services = sorted(rt.registry.services)
    disabled = sorted(rt.settings.disable_services)
    return {
        "workers": workers,
        "services": services,
        "disabled": disabled,
        "findings": [
            {"level": level, "line": line}
            for level, line in report.findings
            if not line.startswith("worker ")  # the workers table shows those
        ],
    }


@bp.route("/workers")
def workers():
    _operator_only()
    return render_template("dashboard/workers.html", page="workers", **workers_data())


@bp.route("/api/workers")
def workers_poll():
    _operator_only()
    data = workers_data()
    return jsonify({**data, "html": render_template("dashboard/_workers_live.html", **data)})


@bp.route("/system")
def system():
    """Installed plugins and their job types; chk_job_type in sync or drifting; its history."""
    from prosaas_core import migrate
    from prosaas_core.cli.plugins import describe

    _operator_only()
    rt = runtime()
    try:
        drift = migrate.drift(rt)
        drift_error = None
    except Exception as exc:
        drift, drift_error = [], str(exc).splitlines()[0][:300]
    history = list(reversed(migrate.history(rt)))[:50]
    return render_template(
        "dashboard/system.html",
        page="system",
        plugins=describe(rt),
        job_types=rt.registry.job_types,
        drift=drift,
        drift_error=drift_error,
        history=history,
    )
