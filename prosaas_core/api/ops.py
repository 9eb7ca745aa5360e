"""Operations endpoints: liveness, readiness, Prometheus metrics and the OpenAPI document.

``/metrics`` (every tenant's job counts) and the details of ``/readyz`` (hosts, schema drift)
are for operators only: a request bearing ``PROSAAS_METRICS_TOKEN``, or coming from an address
in ``PROSAAS_OPERATOR_NETWORKS`` (default: loopback only; set it empty behind a proxy on the
same host). Anyone else gets 403 from ``/metrics`` and only ready / not ready from ``/readyz``.
"""

from __future__ import annotations

import hmac
import ipaddress
from functools import lru_cache
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from prosaas_core.api.openapi import describe
from prosaas_core.api.support import ApiError, current_runtime
from prosaas_core.errors import first_line

bp = Blueprint("prosaas_ops", __name__)

_OK = {"type": "object", "properties": {"status": {"type": "string"}}}
DEFAULT_OPERATOR_NETWORKS = "127.0.0.0/8,::1/128"


@lru_cache(maxsize=8)
def _networks(raw: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    from prosaas_core.errors import ConfigError

    try:
        return tuple(ipaddress.ip_network(n.strip()) for n in raw.split(",") if n.strip())
    except ValueError as exc:
        raise ConfigError(f"PROSAAS_OPERATOR_NETWORKS: {exc}") from None


def is_operator() -> bool:
    """Whether this request may see operator data: it bears ``PROSAAS_METRICS_TOKEN``, or comes
    from ``PROSAAS_OPERATOR_NETWORKS``."""
    settings = current_runtime().settings
    token = settings.get("PROSAAS_METRICS_TOKEN")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if token and scheme.lower() == "bearer":
        if hmac.compare_digest(given.strip().encode(), token.encode()):
            return True
    nets = _networks(settings.env.get("PROSAAS_OPERATOR_NETWORKS", DEFAULT_OPERATOR_NETWORKS))
    try:
        addr = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        return False
    return any(addr in net for net in nets)


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
        # a hung Redis answers "not ready" in PROSAAS_PUSH_TIMEOUT, not 10 s
        rt.request_redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = "unreachable"
        problems.append(f"redis unreachable: {first_line(exc)}")
    return checks, problems


@bp.get("/readyz")
@describe(responses={200: ("Ready to serve", {"application/json": {"schema": _OK}})})
def readyz():
    """Readiness: database reachable, schema and chk_job_type in sync, Redis reachable.

    503 when not. Operators also get each check, the versions (core, plugin contract, each
    plugin, incompatible plugins with the reason) and one line per problem in ``details``;
    anyone else only ready / not ready.
    """
    checks, problems = readiness_problems()
    operator = is_operator()
    if problems:
        resp = jsonify({"error": "Not ready", "details": problems if operator else None})
        resp.status_code = 503
        return resp
    if not operator:
        return jsonify({"status": "ready"})
    from prosaas_core.plugins import versions

    return jsonify(
        {"status": "ready", "checks": checks, "versions": versions(current_runtime().pm)}
    )


@bp.get("/metrics")
@describe(
    responses={200: ("Prometheus text format", {"text/plain": {"schema": {"type": "string"}}})}
)
def metrics():
    """Prometheus metrics: jobs by type and status, queues, durations, workers, services.

    Operators only (``PROSAAS_METRICS_TOKEN`` or ``PROSAAS_OPERATOR_NETWORKS``): 403 otherwise.
    """
    if not is_operator():
        raise ApiError(
            403,
            "Forbidden",
            "metrics are for operators: send Authorization: Bearer $PROSAAS_METRICS_TOKEN",
        )
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
