"""Operations endpoints: liveness, readiness, Prometheus metrics and the OpenAPI document."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify

from prosaas_core.api.openapi import describe
from prosaas_core.api.support import current_runtime
from prosaas_core.errors import first_line

bp = Blueprint("prosaas_ops", __name__)

_OK = {"type": "object", "properties": {"status": {"type": "string"}}}


@bp.get("/healthz")
@describe(responses={200: ("The process is alive", {"application/json": {"schema": _OK}})})
def healthz():
    """Liveness: the process answers."""
    return jsonify({"status": "ok"})


def readiness_problems() -> tuple[dict[str, str], list[str]]:
    """Each dependency's state, and one line per problem (empty when ready)."""
    from sqlalchemy import text

    rt = current_runtime()
    checks: dict[str, str] = {}
    problems: list[str] = []
    try:
        with rt.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = "unreachable"
        problems.append(f"database unreachable: {first_line(exc)}")
    if checks["database"] == "ok":
        try:
            from prosaas_core.migrate import drift

            lines = drift(rt)
            checks["schema"] = "ok" if not lines else "drift"
            problems.extend(lines)
        except Exception as exc:
            checks["schema"] = "unknown"
            problems.append(f"schema check failed: {first_line(exc)}")
    try:
        rt.redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = "unreachable"
        problems.append(f"redis unreachable: {first_line(exc)}")
    return checks, problems


@bp.get("/readyz")
@describe(responses={200: ("Ready to serve", {"application/json": {"schema": _OK}})})
def readyz():
    """Readiness: database reachable, schema and chk_job_type in sync, Redis reachable.

    503 lists what is wrong, one line each, in ``details``.
    """
    checks, problems = readiness_problems()
    if problems:
        resp = jsonify({"error": "Not ready", "details": problems})
        resp.status_code = 503
        return resp
    return jsonify({"status": "ready", "checks": checks})


@bp.get("/metrics")
@describe(
    responses={200: ("Prometheus text format", {"text/plain": {"schema": {"type": "string"}}})}
)
def metrics():
    """Prometheus metrics: jobs by type and status, queues, durations, workers, services."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return Response(
        generate_latest(current_app.extensions["prosaas_metrics"]),
        200,
        {"Content-Type": CONTENT_TYPE_LATEST},
    )


@bp.get("/api/openapi.json")
@describe(
    responses={
        200: ("The OpenAPI 3.1 document", {"application/json": {"schema": {"type": "object"}}})
    }
)
def openapi():
    """This API's OpenAPI 3.1 document: every core and plugin route, job payload schemas."""
    doc: Any = current_app.extensions.get("prosaas_openapi")
    if doc is None:
        from prosaas_core.api.openapi import build_document

        doc = current_app.extensions["prosaas_openapi"] = build_document(current_app)
    return jsonify(doc)
