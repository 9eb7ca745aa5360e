"""The ``broadcast`` job: prepare the recipients, split into parts, send.

The first job of a broadcast prepares its recipients in keyset batches (each batch and the
job's checkpoint in one transaction, so a killed worker resumes without duplicating or losing
a recipient), then enqueues up to ``BROADCAST_MAX_PARTS - 1`` part jobs (one per
``BROADCAST_PART_SIZE`` recipients) and sends alongside them. Every part runs the same loop
(`prosaas_broadcast.sender`); the last one to find nothing left marks the broadcast over.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Literal

from pydantic import Field, PositiveInt, field_validator

from prosaas_broadcast import store
from prosaas_broadcast.config import BroadcastConfig
from prosaas_broadcast.prepare import BATCH, prepare_batch
from prosaas_broadcast.providers import ProviderError, get_provider, provider_classes
from prosaas_broadcast.sender import Sender
from prosaas_broadcast.template import MAX_TEMPLATE, TemplateError, placeholders
from prosaas_core.leads import LeadBatcher, LeadSelection

#: messages per second a broadcast may ask for, at most (a business's own cap applies first)
MAX_RATE = 10_000


class BroadcastPayload(LeadSelection):
    """A broadcast: the leads (``lead_ids``, ``filter`` or ``all``), the ``channel``, the
    ``template`` and optionally the ``provider``, a ``rate`` (messages per second, never above
    the business's) and ``scheduled_at``. ``broadcast_id`` and ``part`` are set by prosaas."""

    channel: Literal["sms", "whatsapp"] = "sms"
    template: str = Field(min_length=1, max_length=MAX_TEMPLATE)
    provider: str | None = Field(default=None, max_length=64, pattern=r"^[a-z][a-z0-9_\-]*$")
    rate: float | None = Field(default=None, gt=0, le=MAX_RATE, description="messages/s")
    scheduled_at: datetime | None = None
    broadcast_id: PositiveInt | None = None
    part: int | None = Field(default=None, ge=1, le=256)

    @field_validator("template")
    @classmethod
    def _known_placeholders(cls, value: str) -> str:
        try:
            placeholders(value)
        except TemplateError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("scheduled_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


def provider_name(payload: BroadcastPayload, cfg: BroadcastConfig, pm) -> str:
    """The provider to use; ValueError naming the installed ones when it is unknown."""
    name = payload.provider or cfg.default_provider
    installed = provider_classes(pm)
    if name not in installed:
        raise ValueError(f"unknown provider {name!r}; installed: {', '.join(sorted(installed))}")
    return name


def _pm(ctx):
    """The worker's plugin manager: JobContext has no public accessor for it, so the one that
    ran this plugin's ``prosaas_addhooks`` is remembered (`prosaas_broadcast.plugin_manager`)."""
    from prosaas_broadcast import plugin_manager

    return plugin_manager()


def broadcast(ctx) -> dict:
    """Handler of the ``broadcast`` job type."""
    cfg = BroadcastConfig.from_settings(ctx.settings)
    p: BroadcastPayload = ctx.payload
    with ctx.session() as s:
        if p.broadcast_id is not None:
            b = store.get_broadcast(s, ctx.business_id, p.broadcast_id)
            if b is None:
                raise ValueError(f"broadcast {p.broadcast_id} not found for this business")
        else:  # enqueued through the jobs API: the broadcast row is this job's
            future = p.scheduled_at is not None and p.scheduled_at > store.now()
            bid = store.broadcast_for_job(
                s,
                ctx.business_id,
                ctx.job_id,
                channel=p.channel,
                template=p.template,
                provider=provider_name(p, cfg, _pm(ctx)),
                rate=p.rate,
                selection=p.as_selection().model_dump(mode="json", exclude_none=True),
                scheduled_at=p.scheduled_at,
                status="scheduled" if future else "queued",
            )
            b = store.get_broadcast(s, ctx.business_id, bid)
    assert b is not None, "written above in the same transaction"
    if b["status"] == "scheduled":
        return {"broadcast_id": b["id"], "scheduled_at": b["scheduled_at"].isoformat()}
    if b["status"] == "failed":  # a later attempt of a job whose broadcast could not start
        raise RuntimeError(f"broadcast {b['id']} failed: {b['error']}")
    if b["status"] in ("succeeded", "cancelled"):
        return _result(ctx, b, None)
    provider = get_provider(_pm(ctx), b["provider"], cfg)
    try:
        provider.check()
    except ProviderError as exc:
        if ctx.attempt >= ctx.max_attempts:  # until then a fixed setting lets a retry start it
            with ctx.session() as s:
                store.set_broadcast(
                    s, b["id"], status="failed", error=str(exc), finished_at=store.now()
                )
        raise RuntimeError(f"broadcast {b['id']}: provider {b['provider']}: {exc}") from None
    if p.part is None:
        _prepare(ctx, cfg, b)
        _enqueue_parts(ctx, cfg, b)
    sender = Sender(ctx, cfg, b, provider)
    sender.run(threads=cfg.sender_threads)
    return _result(ctx, b, sender.tally)


def _prepare(ctx, cfg: BroadcastConfig, b: dict) -> None:
    state = dict(ctx.state)
    if state.get("prepared"):
        return
    selection = LeadSelection.model_validate(b["selection"])
    batcher = LeadBatcher(ctx.business_id, selection, state.get("leads"), BATCH)
    with ctx.session() as s:
        if not batcher.started:
            batcher.start(s)
            store.set_broadcast(s, b["id"], status="preparing", started_at=store.now())
            ctx.checkpoint({**state, "leads": batcher.state}, session=s)
    ctx.progress(0, batcher.total)
    while True:
        if ctx.should_stop() or _cancelled(ctx, b["id"]):
            return  # the sender ends it: it skips what is pending and marks it cancelled
        with ctx.session() as s:
            got = prepare_batch(s, batcher, b, cfg.default_region)
            if got is None:
                state = {**state, "leads": batcher.state, "prepared": True}
                ctx.checkpoint(state, session=s)
                break
            batch, _ = got
            batcher.state = batcher.advance(batch)
            ctx.checkpoint({**state, "leads": batcher.state}, session=s)


def _cancelled(ctx, broadcast_id: int) -> bool:
    with ctx.session() as s:
        return store.cancel_requested(s, broadcast_id)


def _enqueue_parts(ctx, cfg: BroadcastConfig, b: dict) -> None:
    state = dict(ctx.state)
    with ctx.session() as s:
        by_status, _ = store.counts(s, b["id"])
    todo = by_status["pending"]
    parts = max(1, min(cfg.max_parts, math.ceil(todo / cfg.part_size)))
    if not state.get("parts_enqueued"):
        with ctx.session() as s:
            store.start_sending(s, b["id"], sum(by_status.values()), parts)
        payload = {
            **ctx.payload.model_dump(mode="json", exclude_none=True),
            "broadcast_id": b["id"],
        }
        # a crash between these and the checkpoint enqueues them again: harmless, every part
        # claims recipients one by one
        for k in range(1, parts):
            ctx.enqueue("broadcast", {**payload, "part": k})
        ctx.checkpoint({**state, "parts_enqueued": True, "parts": parts})


def _result(ctx, b: dict, tally: dict | None) -> dict:
    with ctx.session() as s:
        by_status, skipped = store.counts(s, b["id"])
        row = store.get_broadcast(s, ctx.business_id, b["id"])
    assert row is not None, "a broadcast row is never deleted while its job runs"
    total = sum(by_status.values())
    ctx.progress(total - by_status["pending"] - by_status["sending"], total)
    return {
        "broadcast_id": b["id"],
        "status": row["status"],
        "total": total,
        "counts": by_status,
        "skipped": skipped,
        "this_part": tally or {},
    }
