"""The ``enqueue_outbound_calls`` handler: check the payload, create the campaign and one target
per selected lead, in resumable batches. Dialing is the ``outbound-dialer`` service's: the job
never waits for a live-call slot, and targets are dialed as soon as their batch commits."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from prosaas_core.leads import LeadBatcher, batch_size
from prosaas_outbound_calls import campaigns
from prosaas_outbound_calls.config import OutboundConfig
from prosaas_outbound_calls.dialer import wake
from prosaas_outbound_calls.payload import OutboundCalls
from prosaas_outbound_calls.tables import leads

BATCH = 1_000


def enqueue_outbound_calls(ctx: Any) -> dict[str, Any]:
    """Create campaign ``ctx.job_id`` and its targets; returns the campaign's lead counts."""
    p: OutboundCalls = ctx.payload
    cfg = OutboundConfig.from_settings(ctx.settings)
    cid, bid = ctx.job_id, ctx.business_id
    with ctx.session() as s:
        try:
            resolved = campaigns.resolve(s, bid, p, cfg)
        except campaigns.CampaignInvalid as exc:
            campaigns.fail(s, bid, cid, str(exc))
            raise
        campaigns.create(s, cid, bid, p, resolved)
    batcher = LeadBatcher(bid, p.as_selection(), ctx.state, batch_size(ctx.settings, BATCH))
    if not batcher.started:
        with ctx.session() as s:
            batcher.start(s)
            ctx.checkpoint(batcher.state, session=s)
    ctx.progress(batcher.done, batcher.total)
    ctx.log.info("Preparing outbound calls: %s (campaign=%s)", p.describe(), cid)
    woken = False
    state = "running"
    while True:
        if ctx.should_stop():
            if ctx.stopped_for == "cancel":
                with ctx.session() as s:
                    campaigns.control(s, bid, cid, "cancel")
            break
        with ctx.session() as s:
            row = campaigns.get(s, bid, cid, lock=True)  # a cancel waits for this batch
            state = row.state
            if state in ("cancelled", "failed", "completed"):
                break
            batch = batcher.next_batch(s)
            if batch is None:
                campaigns.mark_prepared(s, cid)
                campaigns.finish(s, [cid])
                break
            dialect = s.get_bind().dialect.name
            rows = s.execute(
                select(leads.c.id, leads.c.phone, leads.c.tags)
                .where(batch.where(dialect))
                .order_by(leads.c.id)
            ).all()
            new = campaigns.classify(s, bid, cid, rows, cfg.default_region)
            campaigns.add_targets(s, cid, new)
            counts = campaigns.tally(new)
            campaigns.add_counts(s, cid, counts)
            next_state = batcher.advance(batch, **counts)
            ctx.checkpoint(next_state, session=s)
        batcher.state = next_state
        ctx.progress(batcher.done, batcher.total)
        if not woken and counts["to_call"]:
            wake(ctx.limits.slots.redis, "job")
            woken = True
    wake(ctx.limits.slots.redis, "job")
    st = batcher.state
    return {
        "campaign_id": cid,
        "state": state,
        **{
            k: int(st.get(k, 0))
            for k in ("total_leads", "to_call", "skipped_invalid", "skipped_dnc")
        },
        "skipped_duplicate": int(st.get("skipped_duplicate", 0)),
    }
