"""HTTP: ``POST /api/outbound-calls`` (202; ``dry_run`` previews), ``GET /api/outbound-calls``,
``GET /api/outbound-calls/<id>`` and ``POST /api/outbound-calls/<id>/pause|resume|cancel``.

Every route is scoped to the bearer token's business: another business's campaign is 404, the
same as one that does not exist. A campaign's id is the id of the job that prepared it, hence
the routes' ``job_id``."""

from __future__ import annotations

import logging

from flask import Blueprint, jsonify, request
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy import select

from prosaas_core.api import (
    ApiError,
    authenticated,
    current_business_id,
    current_runtime,
    enqueue_job,
    parse_json,
)
from prosaas_core.api.openapi import describe
from prosaas_core.api.schemas import Error
from prosaas_outbound_calls import campaigns, report
from prosaas_outbound_calls.config import OutboundConfig
from prosaas_outbound_calls.dialer import wake
from prosaas_outbound_calls.payload import OutboundCalls, OutboundCallsRequest
from prosaas_outbound_calls.provider import missing_settings
from prosaas_outbound_calls.tables import campaigns as C

log = logging.getLogger("prosaas.outbound_calls.api")

bp = Blueprint("outbound_calls", __name__, url_prefix="/api/outbound-calls")

JOB_TYPE = "enqueue_outbound_calls"
MAX_LIMIT = 100


def _config() -> OutboundConfig:
    return OutboundConfig.from_settings(current_runtime().settings)


def _resolve(s, body: OutboundCalls, cfg: OutboundConfig) -> campaigns.Resolved:
    try:
        return campaigns.resolve(s, current_business_id(), body, cfg)
    except campaigns.CampaignInvalid as exc:
        raise ApiError(400, "Invalid campaign", exc.details) from None


_OBJECT = {"application/json": {"schema": {"type": "object"}}}


@bp.post("")
@authenticated
@describe(
    body=OutboundCallsRequest,
    responses={
        202: ("Campaign accepted: its job (the campaign's id)", _OBJECT),
        200: ("dry_run: the preview", _OBJECT),
        400: ("Invalid campaign (caller id not the business's, selection, limits)", Error),
    },
    tags=["outbound-calls"],
)
def create_campaign():
    """Start a campaign over a lead selection (or preview it with ``"dry_run": true``)."""
    body = parse_json(OutboundCallsRequest)
    cfg = _config()
    rt = current_runtime()
    business_id = current_business_id()
    with rt.session() as s:
        resolved = _resolve(s, body, cfg)
        if body.dry_run:
            return jsonify(report.preview(s, business_id, body, resolved, cfg))
    missing = missing_settings(cfg)
    if missing:
        raise ApiError(503, "Outbound calls not configured", f"set {', '.join(missing)}")
    payload = body.model_dump(mode="json", exclude_none=True, exclude={"dry_run"})
    resp = enqueue_job(JOB_TYPE, payload)
    campaign_id = resp.get_json()["id"]
    with rt.session() as s:
        campaigns.create(
            s, campaign_id, business_id, OutboundCalls.model_validate(payload), resolved
        )
    log.info(
        "Outbound campaign %s created: %s (tenant=%s)", campaign_id, body.describe(), business_id
    )
    body_out = {**resp.get_json(), "campaign_id": campaign_id}
    out = jsonify(body_out)
    out.status_code = 202
    out.headers["Location"] = f"/api/outbound-calls/{campaign_id}"
    return out


def _row(s, campaign_id: int):
    row = campaigns.get(s, current_business_id(), campaign_id)
    if row is None:
        raise ApiError(404, "Not found", f"campaign {campaign_id} not found")
    return row


@bp.get("")
@authenticated
def list_campaigns():
    """The business's campaigns, newest first (``?limit=`` at most 100, ``?before=<id>``)."""
    try:
        limit = int(request.args.get("limit", 20))
        before = int(request.args["before"]) if "before" in request.args else None
    except ValueError:
        raise ApiError(400, "Invalid query", "limit and before must be integers") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(400, "Invalid query", f"limit must be between 1 and {MAX_LIMIT}")
    stmt = (
        select(C.c.id, C.c.name, C.c.state, C.c.to_call, C.c.created_at, C.c.finished_at)
        .where(C.c.business_id == current_business_id())
        .order_by(C.c.id.desc())
        .limit(limit)
    )
    if before is not None:
        stmt = stmt.where(C.c.id < before)
    with current_runtime().session() as s:
        rows = list(s.execute(stmt))
    return jsonify(
        {
            "campaigns": [
                {
                    "id": r.id,
                    "name": r.name,
                    "state": r.state,
                    "to_call": r.to_call,
                    "created_at": r.created_at.isoformat(),
                    "finished_at": r.finished_at.isoformat() if r.finished_at else None,
                }
                for r in rows
            ],
            "next_before": rows[-1].id if len(rows) == limit else None,
        }
    )


@bp.get("/<int:job_id>")
@authenticated
def get_campaign(job_id: int):
    """Counts by status, live calls, rate and ETA."""
    rt = current_runtime()
    with rt.session() as s:
        return jsonify(report.summary(s, _row(s, job_id), rt.request_limits))


def _control(campaign_id: int, action: str):
    rt = current_runtime()
    with rt.session() as s:
        _row(s, campaign_id)
        changed, row = campaigns.control(s, current_business_id(), campaign_id, action)
        if not changed:
            raise ApiError(
                409, f"Cannot {action} campaign", {"id": campaign_id, "state": row.state}
            )
        redis_away = False
        try:
            out = report.summary(s, row, rt.request_limits)
        except (RedisConnectionError, RedisTimeoutError) as exc:  # done all the same: say so
            log.warning("campaign %s %s: live calls unknown (%s)", campaign_id, action, exc)
            out, redis_away = report.summary(s, row, None), True
    if action == "resume" and not redis_away:  # else the dialers' slow timer finds it
        wake(rt.request_limits.slots.redis)
    log.info("Outbound campaign %s: %s (tenant=%s)", campaign_id, action, current_business_id())
    return jsonify(out)


@bp.post("/<int:job_id>/pause")
@authenticated
def pause(job_id: int):
    """No new calls (within a second); live calls go on."""
    return _control(job_id, "pause")


@bp.post("/<int:job_id>/resume")
@authenticated
def resume(job_id: int):
    return _control(job_id, "resume")


@bp.post("/<int:job_id>/cancel")
@authenticated
def cancel(job_id: int):
    """Targets not yet dialed are cancelled; live calls finish."""
    return _control(job_id, "cancel")
