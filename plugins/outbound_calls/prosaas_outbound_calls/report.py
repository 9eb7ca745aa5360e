"""What the API and the CLI show: a campaign's summary and a dry-run preview."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from prosaas_core.leads import LeadBatcher
from prosaas_outbound_calls import campaigns
from prosaas_outbound_calls.config import OutboundConfig
from prosaas_outbound_calls.payload import OutboundCalls
from prosaas_outbound_calls.tables import background_jobs, leads, targets

#: a dry run looks at this many leads at most (then says it stopped short)
MAX_PREVIEW_LEADS = 100_000
PREVIEW_BATCH = 2_000
SAMPLE = 10


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _avg_call_seconds(session: Session, campaign_id: int) -> float | None:
    if session.get_bind().dialect.name != "postgresql":
        return None
    T = targets
    value = session.execute(
        select(func.avg(func.extract("epoch", T.c.finished_at - T.c.dialed_at))).where(
            T.c.campaign_id == campaign_id, T.c.status == "completed", T.c.dialed_at.is_not(None)
        )
    ).scalar_one()
    return float(value) if value is not None else None


def eta_seconds(remaining: int, cps: float, max_concurrent: int, avg: float | None) -> float:
    """Remaining targets over the rate the campaign can keep: its call rate, or fewer when
    calls last long enough for the live-call slots to be the limit."""
    rate = cps if not avg else min(cps, max_concurrent / max(avg, 0.001))
    return round(remaining / rate, 1) if remaining else 0.0


def summary(session: Session, row: Any, limits: Any) -> dict[str, Any]:
    """A campaign as JSON: settings, counts by status, live calls, rate and ETA (`limits`
    None: the business's live calls are not read, and are null)."""
    counts = campaigns.counts(session, row.id)
    live = counts.get("dialing", 0) + counts.get("live", 0)
    remaining = counts.get("pending", 0) + live
    job = session.execute(
        select(background_jobs.c.status, background_jobs.c.error).where(
            background_jobs.c.id == row.id
        )
    ).first()
    key = campaigns.slot_key(row.business_id)
    business_live = limits.slots.active(key) if limits is not None else None
    avg = _avg_call_seconds(session, row.id)
    return {
        "id": row.id,
        "name": row.name,
        "state": row.state,
        "prepared": row.prepared,
        "caller_id": row.caller_id,
        "twiml_url": row.twiml_url,
        "record": row.record,
        "machine_detection": row.machine_detection,
        "max_concurrent": row.max_concurrent,
        "retry": {
            "attempts": row.retry_attempts,
            "spacing_seconds": row.retry_spacing,
            "on": row.retry_on.split(","),
        },
        "leads": {
            "total": row.total_leads,
            "to_call": row.to_call,
            "skipped_invalid": row.skipped_invalid,
            "skipped_dnc": row.skipped_dnc,
            "skipped_duplicate": row.skipped_duplicate,
        },
        "counts": counts,
        "live_calls": live,
        "business_live_calls": business_live,
        "rate": {
            "calls_per_second": row.calls_per_second,
            "recent_per_second": campaigns.recent_rate(session, row.id),
        },
        "average_call_seconds": round(avg, 2) if avg is not None else None,
        "eta_seconds": eta_seconds(remaining, row.calls_per_second, row.max_concurrent, avg)
        if row.state in ("running", "paused")
        else 0.0,
        "job": {"id": row.id, "status": job.status if job else None},
        "error": row.error,
        "created_at": _iso(row.created_at),
        "finished_at": _iso(row.finished_at),
    }


def preview(
    session: Session,
    business_id: int,
    p: OutboundCalls,
    resolved: campaigns.Resolved,
    cfg: OutboundConfig,
) -> dict[str, Any]:
    """What the campaign would do: counts of leads to call and skipped, a sample, the ETA."""
    batcher = LeadBatcher(business_id, p.as_selection(), None, PREVIEW_BATCH)
    batcher.start(session)
    dialect = session.get_bind().dialect.name
    totals = {"total_leads": 0, "to_call": 0, "skipped_invalid": 0, "skipped_dnc": 0}
    totals["skipped_duplicate"] = 0
    sample: list[dict[str, Any]] = []
    seen: set[str] = set()
    truncated = False
    while (batch := batcher.next_batch(session)) is not None:
        if totals["total_leads"] >= MAX_PREVIEW_LEADS:
            truncated = True
            break
        rows = session.execute(
            select(leads.c.id, leads.c.phone, leads.c.tags)
            .where(batch.where(dialect))
            .order_by(leads.c.id)
        ).all()
        classified = campaigns.classify(session, business_id, -1, rows, cfg.default_region)
        for t in classified:  # duplicates across batches, as the job would find them
            if t["skip_reason"] is None and t["phone"] in seen:
                t.update(status="skipped", skip_reason="duplicate")
            elif t["skip_reason"] is None:
                seen.add(t["phone"])
        for k, v in campaigns.tally(classified).items():
            totals[k] += v
        sample += [
            {k: t[k] for k in ("lead_id", "phone", "status", "skip_reason")}
            for t in classified[: SAMPLE - len(sample)]
        ]
        batcher.state = batcher.advance(batch)
    return {
        "dry_run": True,
        "caller_id": resolved.caller_id,
        "twiml_url": resolved.twiml_url,
        "max_concurrent": resolved.max_concurrent,
        "calls_per_second": resolved.calls_per_second,
        "business_caps": resolved.caps,
        "leads": totals,
        "truncated": truncated,
        "sample": sample,
        "eta_seconds": eta_seconds(
            totals["to_call"], resolved.calls_per_second, resolved.max_concurrent, None
        ),
    }
