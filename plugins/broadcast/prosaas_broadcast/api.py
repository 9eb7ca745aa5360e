"""HTTP: ``/api/broadcasts`` (tenant-scoped by the bearer token; another business's broadcast
is 404) and the opt-out list.

- ``POST /api/broadcasts``: 202 ``{id, broadcast_id, job}`` (``Location`` to poll), or with
  ``"dry_run": true`` 200 with a preview: ``count``, ``skipped`` by reason, three ``samples``.
- ``GET /api/broadcasts?limit=&before=``: newest first, keyset-paginated (``next_before``).
- ``GET /api/broadcasts/<id>``: counts by status, skipped by reason, rate, ETA.
- ``GET /api/broadcasts/<id>/recipients?status=&after=&limit=``: keyset-paginated by id.
- ``POST /api/broadcasts/<id>/cancel``.
- ``POST|DELETE /api/broadcasts/opt-outs`` ``{"phones": [...]}``.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any, overload

from flask import Blueprint, jsonify, request, url_for
from pydantic import BaseModel, ConfigDict, Field

from prosaas_broadcast import store
from prosaas_broadcast.config import BroadcastConfig
from prosaas_broadcast.jobs import BroadcastPayload, provider_name
from prosaas_broadcast.phones import to_e164
from prosaas_broadcast.prepare import preview
from prosaas_broadcast.tables import RECIPIENT_STATUSES
from prosaas_core.api import (
    ApiError,
    authenticated,
    current_business_id,
    current_runtime,
    parse_json,
)
from prosaas_core.api.openapi import describe
from prosaas_core.api.schemas import Error

log = logging.getLogger("prosaas.broadcast.api")

bp = Blueprint("broadcast", __name__)

MAX_PAGE = 500
DEFAULT_PAGE = 50
MAX_OPT_OUTS = 1000


class BroadcastRequest(BroadcastPayload):
    """The body of ``POST /api/broadcasts``."""

    dry_run: bool = False


class OptOuts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    phones: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        min_length=1, max_length=MAX_OPT_OUTS
    )
    source: str = Field(default="api", max_length=64)


def _cfg() -> BroadcastConfig:
    return BroadcastConfig.from_settings(current_runtime().settings)


@overload
def _int_arg(name: str, default: int, low: int, high: int) -> int: ...
@overload
def _int_arg(name: str, default: None, low: int, high: int) -> int | None: ...
def _int_arg(name: str, default: int | None, low: int, high: int) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if len(raw) > 20 or not raw.lstrip("-").isdigit():
        raise ApiError(400, "Invalid query", f"{name} must be an integer")
    value = int(raw)
    if not low <= value <= high:
        raise ApiError(400, "Invalid query", f"{name} must be between {low} and {high}")
    return value


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _summary(b: dict) -> dict:
    return {
        "id": b["id"],
        "job_id": b["job_id"],
        "status": b["status"],
        "channel": b["channel"],
        "provider": b["provider"],
        "total": b["total"],
        "cancel_requested": b["cancel_requested"],
        "created_at": _iso(b["created_at"]),
        "scheduled_at": _iso(b["scheduled_at"]),
        "started_at": _iso(b["started_at"]),
        "finished_at": _iso(b["finished_at"]),
    }


def _detail(s, b: dict, cfg: BroadcastConfig) -> dict:
    by_status, skipped = store.counts(s, b["id"])
    rate = cfg.effective_rate(b["rate"])
    left = by_status["pending"] + by_status["sending"]
    return {
        **_summary(b),
        "template": b["template"],
        "error": b["error"],
        "counts": by_status,
        "skipped": skipped,
        "rate_per_second": round(rate.per_second, 4),
        "eta_seconds": round(left / rate.per_second, 1) if left else 0,
    }


def _own(s, broadcast_id: int) -> dict:
    b = store.get_broadcast(s, current_business_id(), broadcast_id)
    if b is None:
        raise ApiError(404, "Not found", f"broadcast {broadcast_id} not found")
    return b


_OBJECT = {"application/json": {"schema": {"type": "object"}}}


@bp.post("/api/broadcasts")
@authenticated
@describe(
    body=BroadcastRequest,
    responses={
        202: ("Broadcast accepted: its job and broadcast id", _OBJECT),
        200: ("dry_run: the preview (count, skipped by reason, samples)", _OBJECT),
        400: ("Invalid broadcast (unknown placeholder, provider, selection)", Error),
    },
    tags=["broadcasts"],
)
def create():
    """Start a broadcast to a lead selection of the caller's business, or preview it."""
    body: BroadcastRequest = parse_json(BroadcastRequest)
    if body.broadcast_id is not None or body.part is not None:
        raise ApiError(400, "Invalid payload", "broadcast_id and part are set by prosaas")
    rt = current_runtime()
    cfg = _cfg()
    business_id = current_business_id()
    try:
        provider = provider_name(body, cfg, rt.pm)
    except ValueError as exc:
        raise ApiError(400, "Invalid payload", str(exc)) from None
    if body.rate is not None and body.rate > cfg.rate.per_second:
        raise ApiError(
            400,
            "Invalid payload",
            f"rate {body.rate:g}/s is above this business's {cfg.rate.per_second:g}/s",
        )
    selection = body.as_selection()
    if body.dry_run:
        with rt.session() as s:
            out = preview(s, business_id, selection, body.template, cfg.default_region)
        return jsonify({**out, "provider": provider, "channel": body.channel})
    future = body.scheduled_at is not None and body.scheduled_at > store.now()
    with rt.session() as s:
        bid = store.create_broadcast(
            s,
            business_id,
            channel=body.channel,
            template=body.template,
            provider=provider,
            rate=body.rate,
            selection=selection.model_dump(mode="json", exclude_none=True),
            scheduled_at=body.scheduled_at,
            status="scheduled" if future else "queued",
        )
    job = None
    if not future:
        from prosaas_core import enqueue

        payload = body.model_dump(mode="json", exclude_none=True, exclude={"dry_run"})
        payload.update(provider=provider, broadcast_id=bid)
        try:
            res = enqueue(rt, "broadcast", business_id, payload)
        except Exception:
            with rt.session() as s:  # nothing will send it: do not leave a queued broadcast
                store.set_broadcast(s, bid, status="failed", error="could not enqueue")
            raise
        with rt.session() as s:
            store.set_broadcast(s, bid, job_id=res.id)
        job = {"id": res.id, "status": res.status, "job_type": res.job_type}
    log.info("Broadcast %s created (tenant=%s, %s)", bid, business_id, selection.describe())
    resp = jsonify(
        {"id": bid, "broadcast_id": bid, "status": "scheduled" if future else "queued", "job": job}
    )
    resp.status_code = 202
    resp.headers["Location"] = url_for("broadcast.get_one", broadcast_id=bid)
    return resp


@bp.get("/api/broadcasts")
@authenticated
def get_list():
    """The caller's broadcasts, newest first: ``?limit=`` (at most 500), ``?before=<id>``."""
    limit = _int_arg("limit", DEFAULT_PAGE, 1, MAX_PAGE)
    before = _int_arg("before", None, 1, 2**63 - 1)
    with current_runtime().session() as s:
        rows = store.list_broadcasts(s, current_business_id(), before=before, limit=limit)
    items = [_summary(b) for b in rows]
    nxt = items[-1]["id"] if len(items) == limit else None
    return jsonify({"items": items, "next_before": nxt})


@bp.get("/api/broadcasts/<int:broadcast_id>")
@authenticated
def get_one(broadcast_id: int):
    """One broadcast with its counts by status, the skipped by reason, its rate and ETA."""
    with current_runtime().session() as s:
        return jsonify(_detail(s, _own(s, broadcast_id), _cfg()))


@bp.get("/api/broadcasts/<int:broadcast_id>/recipients")
@authenticated
def get_recipients(broadcast_id: int):
    """Recipients by id: ``?status=``, ``?after=<id>``, ``?limit=`` (at most 500)."""
    status = request.args.get("status") or None
    if status is not None and status not in RECIPIENT_STATUSES:
        raise ApiError(
            400, "Invalid query", f"status must be one of {', '.join(RECIPIENT_STATUSES)}"
        )
    limit = _int_arg("limit", DEFAULT_PAGE, 1, MAX_PAGE)
    after = _int_arg("after", 0, 0, 2**63 - 1)
    with current_runtime().session() as s:
        _own(s, broadcast_id)
        rows = store.list_recipients(s, broadcast_id, status=status, after=after, limit=limit)
    items = [
        {
            "id": r["id"],
            "lead_id": r["lead_id"],
            "phone": r["phone"],
            "status": r["status"],
            "skip_reason": r["skip_reason"],
            "body": r["body"],
            "provider_message_id": r["provider_message_id"],
            "error": r["error"],
            "attempts": r["attempts"],
            "sent_at": _iso(r["sent_at"]),
            "delivered_at": _iso(r["delivered_at"]),
        }
        for r in rows
    ]
    nxt = items[-1]["id"] if len(items) == limit else None
    return jsonify({"items": items, "next_after": nxt})


@bp.post("/api/broadcasts/<int:broadcast_id>/cancel")
@authenticated
@describe(
    responses={
        202: ("Cancel requested: the broadcast", _OBJECT),
        404: ("No such broadcast", Error),
    },
    tags=["broadcasts"],
)
def cancel(broadcast_id: int):
    """Stop a broadcast between two sends: what is not sent yet becomes skipped (cancelled)."""
    rt = current_runtime()
    with rt.session() as s:
        b = _own(s, broadcast_id)
        if not store.request_cancel(s, b["business_id"], broadcast_id):
            raise ApiError(409, "Conflict", f"broadcast {broadcast_id} is already {b['status']}")
    with rt.session() as s:
        return jsonify(_detail(s, _own(s, broadcast_id), _cfg())), 202


def _phones(body: OptOuts) -> list[str]:
    region = _cfg().default_region
    bad = [p for p in body.phones if to_e164(p, region) is None]
    if bad:
        raise ApiError(400, "Invalid payload", {"invalid_phones": bad[:20]})
    return sorted({to_e164(p, region) for p in body.phones})  # type: ignore[misc]


@bp.post("/api/broadcasts/opt-outs")
@authenticated
@describe(
    body=OptOuts,
    responses={200: ("The numbers, normalized, and how many were added", _OBJECT),
               400: ("A number that is not a phone number", Error)},
    tags=["broadcasts"],
)  # fmt: skip
def add_opt_outs():
    """Numbers of the caller's business that must never get a broadcast."""
    body = parse_json(OptOuts)
    phones = _phones(body)
    with current_runtime().session() as s:
        added = store.add_opt_outs(s, current_business_id(), phones, body.source)
    return jsonify({"phones": phones, "added": added})


@bp.delete("/api/broadcasts/opt-outs")
@authenticated
@describe(
    body=OptOuts,
    responses={200: ("The numbers, normalized, and how many were removed", _OBJECT),
               400: ("A number that is not a phone number", Error)},
    tags=["broadcasts"],
)  # fmt: skip
def remove_opt_outs():
    """Numbers of the caller's business that may get broadcasts again."""
    body = parse_json(OptOuts)
    phones = _phones(body)
    with current_runtime().session() as s:
        removed = store.remove_opt_outs(s, current_business_id(), phones)
    return jsonify({"phones": phones, "removed": removed})
