"""Turning a lead selection into recipients: render, normalise, skip (no or invalid phone,
opted out, duplicate phone), in keyset batches through `prosaas_core.leads`.

Opt-outs: a business's ``broadcast_opt_outs`` row for the phone (E.164), or the lead's tag
`OPT_OUT_TAG`. The first lead of a phone in the broadcast (lowest id) gets the message; later
leads with that phone are skipped as ``duplicate``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import select

from prosaas_broadcast import store
from prosaas_broadcast.phones import to_e164
from prosaas_broadcast.template import FIELDS, render
from prosaas_core.leads import LeadBatcher, LeadSelection
from prosaas_core.models import Lead

OPT_OUT_TAG = "opted_out"
BATCH = 500
#: the most leads a dry run reads (a preview of a larger selection says it was cut short)
PREVIEW_MAX = 100_000
SAMPLES = 3

_LEADS = Lead.__table__
_COLS = [_LEADS.c[f] for f in FIELDS]


def _opted_out_by_tag(tags: Any) -> bool:
    return isinstance(tags, list) and any(str(t).strip().lower() == OPT_OUT_TAG for t in tags)


def lead_batches(s: Any, batcher: LeadBatcher) -> Iterator[tuple[Any, list[dict]]]:
    """Each next batch of the selection with its leads' fields (the batcher is not advanced:
    the caller does so when the batch is committed)."""
    batch = batcher.next_batch(s)
    if batch is None:
        return
    dialect = s.get_bind().dialect.name
    rows = s.execute(select(*_COLS).where(batch.where(dialect)).order_by(_LEADS.c.id))
    yield batch, [dict(r._mapping) for r in rows]


def classify(
    leads: list[dict],
    *,
    template: str,
    region: str,
    opted_out: set[str],
    seen: set[str],
) -> list[dict]:
    """One recipient row (without ``broadcast_id``) per lead; `seen` (phones already in the
    broadcast) grows with the ones taken here."""
    out = []
    for lead in leads:
        phone = to_e164(lead.get("phone"), region)
        row: dict[str, Any] = {
            "lead_id": lead["id"],
            "phone": phone,
            "body": None,
            "status": "skipped",
            "skip_reason": None,
        }
        if not (lead.get("phone") or "").strip():
            row["skip_reason"] = "no_phone"
        elif phone is None:
            row["skip_reason"] = "invalid_phone"
        elif phone in opted_out or _opted_out_by_tag(lead.get("tags")):
            seen.add(phone)  # the person at this number said no, through whichever lead
            row["skip_reason"] = "opted_out"
        elif phone in seen:
            row["skip_reason"] = "duplicate"
        else:
            seen.add(phone)
            row["status"] = "pending"
            row["body"] = render(template, {**lead, "phone": phone})
        out.append(row)
    return out


def _phones(leads: list[dict], region: str) -> list[str]:
    return sorted({p for p in (to_e164(x.get("phone"), region) for x in leads) if p})


def prepare_batch(
    s: Any, batcher: LeadBatcher, broadcast: dict, region: str
) -> tuple[Any, list[dict]] | None:
    """Add the next batch of recipients in `s`'s transaction: (the batch, its rows), or None
    when the selection is exhausted."""
    for batch, leads in lead_batches(s, batcher):
        phones = _phones(leads, region)
        rows = classify(
            leads,
            template=broadcast["template"],
            region=region,
            opted_out=store.opted_out(s, broadcast["business_id"], phones),
            seen=store.phones_in(s, broadcast["id"], phones),
        )
        store.add_recipients(
            s,
            [
                {**r, "broadcast_id": broadcast["id"], "business_id": broadcast["business_id"]}
                for r in rows
            ],
        )
        return batch, rows
    return None


def preview(
    s: Any, business_id: int, selection: LeadSelection, template: str, region: str
) -> dict[str, Any]:
    """What a broadcast would do, writing nothing: the count it would send, the skipped ones
    by reason, and the first rendered messages."""
    batcher = LeadBatcher(business_id, selection, None, BATCH)
    batcher.start(s)
    seen: set[str] = set()
    skipped: dict[str, int] = {}
    samples: list[dict] = []
    count = read = 0
    truncated = False
    while True:
        got = list(lead_batches(s, batcher))
        if not got:
            break
        batch, leads = got[0]
        phones = _phones(leads, region)
        rows = classify(
            leads,
            template=template,
            region=region,
            opted_out=store.opted_out(s, business_id, phones),
            seen=seen,
        )
        for r in rows:
            if r["status"] == "pending":
                count += 1
                if len(samples) < SAMPLES:
                    samples.append({"lead_id": r["lead_id"], "to": r["phone"], "body": r["body"]})
            else:
                skipped[r["skip_reason"]] = skipped.get(r["skip_reason"], 0) + 1
        batcher.state = batcher.advance(batch)
        read += batch.size
        if read >= PREVIEW_MAX:
            truncated = batcher.done < batcher.total
            break
    return {
        "dry_run": True,
        "count": count,
        "skipped": skipped,
        "samples": samples,
        "selected": batcher.total,
        "truncated": truncated,
    }
