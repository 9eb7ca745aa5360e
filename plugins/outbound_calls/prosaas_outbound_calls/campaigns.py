"""Campaigns: checked and created from a payload, filled with targets in batches, paused,
resumed, cancelled, finished, and summarised for the API. Every statement names the business."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, exists, func, select, update
from sqlalchemy.orm import Session

from prosaas_outbound_calls.config import OutboundConfig
from prosaas_outbound_calls.payload import OutboundCalls
from prosaas_outbound_calls.phones import normalize, tagged_do_not_call
from prosaas_outbound_calls.tables import (
    OPEN_STATUSES,
    business_limits,
    caller_ids,
    campaigns,
    do_not_call,
    targets,
)

C, T = campaigns, targets


def now() -> datetime:
    return datetime.now(UTC)


def dialect_insert(session: Session):
    """The dialect's INSERT (with ON CONFLICT support)."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]  # same API
    return insert


def slot_key(business_id: int) -> str:
    """The live-call slots (and the call rate) of one business, shared by all its campaigns."""
    return f"outbound_calls:{business_id}"


class CampaignInvalid(ValueError):
    """The payload cannot be run for this business (unknown caller id, no TwiML URL)."""

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.details = details if details is not None else message


@dataclass(frozen=True)
class Resolved:
    """A payload checked against the business: the values a campaign runs with."""

    caller_id: str
    twiml_url: str
    max_concurrent: int
    calls_per_second: float
    caps: dict[str, float]


def business_caps(session: Session, business_id: int, cfg: OutboundConfig) -> dict[str, float]:
    """The business's caps: its own row (`outbound-calls limits`) over the settings."""
    row = session.execute(
        select(business_limits).where(business_limits.c.business_id == business_id)
    ).first()
    return {
        "max_concurrent": (row and row.max_concurrent) or cfg.max_concurrent,
        "max_calls_per_second": (row and row.max_calls_per_second) or cfg.max_calls_per_second,
    }


def numbers_of(session: Session, business_id: int) -> list[str]:
    return list(
        session.execute(
            select(caller_ids.c.phone)
            .where(caller_ids.c.business_id == business_id)
            .order_by(caller_ids.c.phone)
        ).scalars()
    )


def resolve(session: Session, business_id: int, p: OutboundCalls, cfg: OutboundConfig) -> Resolved:
    """Check `p` against the business; CampaignInvalid says what is wrong."""
    numbers = numbers_of(session, business_id)
    if p.caller_id not in numbers:
        raise CampaignInvalid(
            "caller_id is not one of the business's numbers",
            {"caller_id": p.caller_id, "configured": numbers[:50]},
        )
    twiml = p.twiml_url or cfg.default_twiml_url
    if not twiml:
        raise CampaignInvalid("twiml_url is required (no OUTBOUND_CALLS_TWIML_URL is set)")
    caps = business_caps(session, business_id, cfg)
    return Resolved(
        caller_id=p.caller_id,
        twiml_url=twiml,
        max_concurrent=int(min(p.max_concurrent or caps["max_concurrent"], caps["max_concurrent"])),
        calls_per_second=float(
            min(p.calls_per_second or caps["max_calls_per_second"], caps["max_calls_per_second"])
        ),
        caps=caps,
    )


def create(
    session: Session, campaign_id: int, business_id: int, p: OutboundCalls, r: Resolved
) -> None:
    """The campaign row, once (the API and the job both call this; the first one wins)."""
    t = now()
    session.execute(
        dialect_insert(session)(C)
        .values(
            id=campaign_id,
            business_id=business_id,
            name=p.name,
            state="running",
            prepared=False,
            caller_id=r.caller_id,
            twiml_url=r.twiml_url,
            max_concurrent=r.max_concurrent,
            calls_per_second=r.calls_per_second,
            record=p.record,
            machine_detection=p.machine_detection,
            retry_attempts=p.retry.attempts,
            retry_spacing=p.retry.spacing_seconds,
            retry_on=",".join(p.retry.on),
            selection=p.as_selection().model_dump(mode="json", exclude_none=True),
            total_leads=0,
            to_call=0,
            skipped_invalid=0,
            skipped_dnc=0,
            skipped_duplicate=0,
            created_at=t,
            updated_at=t,
        )
        .on_conflict_do_nothing(index_elements=["id"])
    )


def get(session: Session, business_id: int, campaign_id: int, *, lock: bool = False) -> Any:
    stmt = select(C).where(C.c.id == campaign_id, C.c.business_id == business_id)
    return session.execute(stmt.with_for_update() if lock else stmt).first()


def fail(session: Session, business_id: int, campaign_id: int, error: str) -> None:
    session.execute(
        update(C)
        .where(C.c.id == campaign_id, C.c.business_id == business_id, C.c.finished_at.is_(None))
        .values(state="failed", error=error[:2000], updated_at=now(), finished_at=now())
    )


# -- targets ----------------------------------------------------------------------------------


def classify(
    session: Session, business_id: int, campaign_id: int, rows: Sequence[Any], region: str
) -> list[dict[str, Any]]:
    """One target per lead row (id, phone, tags): pending, or skipped with its reason."""
    phones = {r.id: normalize(r.phone, region) for r in rows}
    valid = sorted({p for p in phones.values() if p})
    dnc: set[str] = set()
    taken: set[str] = set()
    if valid:
        dnc = set(
            session.execute(
                select(do_not_call.c.phone).where(
                    do_not_call.c.business_id == business_id, do_not_call.c.phone.in_(valid)
                )
            ).scalars()
        )
        taken = set(
            session.execute(
                select(T.c.phone).where(
                    T.c.campaign_id == campaign_id, T.c.skip_reason.is_(None), T.c.phone.in_(valid)
                )
            ).scalars()
        )
    out = []
    t = now()
    for r in rows:
        phone = phones[r.id]
        reason = None
        if phone is None:
            reason = "invalid_number"
        elif phone in dnc or tagged_do_not_call(r.tags):
            reason = "do_not_call"
        elif phone in taken:
            reason = "duplicate"
        else:
            taken.add(phone)
        out.append(
            {
                "campaign_id": campaign_id,
                "business_id": business_id,
                "lead_id": r.id,
                "raw_phone": (r.phone or "")[:32] or None,
                "phone": phone,
                "status": "skipped" if reason else "pending",
                "skip_reason": reason,
                "attempts": 0,
                "next_attempt_at": t,
                "created_at": t,
                "updated_at": t,
            }
        )
    return out


def tally(rows: list[dict[str, Any]]) -> dict[str, int]:
    reasons = [r["skip_reason"] for r in rows]
    return {
        "total_leads": len(rows),
        "to_call": reasons.count(None),
        "skipped_invalid": reasons.count("invalid_number"),
        "skipped_dnc": reasons.count("do_not_call"),
        "skipped_duplicate": reasons.count("duplicate"),
    }


def add_targets(session: Session, campaign_id: int, rows: list[dict[str, Any]]) -> None:
    """Insert targets; a lead already in the campaign (a retried batch) is left as it is."""
    if rows:
        session.execute(
            dialect_insert(session)(T).on_conflict_do_nothing(
                index_elements=["campaign_id", "lead_id"]
            ),
            rows,
        )


def add_counts(session: Session, campaign_id: int, counts: dict[str, int]) -> None:
    session.execute(
        update(C)
        .where(C.c.id == campaign_id)
        .values(**{k: getattr(C.c, k) + v for k, v in counts.items()}, updated_at=now())
    )


def mark_prepared(session: Session, campaign_id: int) -> None:
    session.execute(update(C).where(C.c.id == campaign_id).values(prepared=True, updated_at=now()))


# -- control ----------------------------------------------------------------------------------

TRANSITIONS = {"pause": ("running", "paused"), "resume": ("paused", "running")}


def control(session: Session, business_id: int, campaign_id: int, action: str) -> tuple[bool, Any]:
    """Pause, resume or cancel: (changed, the row after). Not changed: the state forbids it."""
    row = get(session, business_id, campaign_id, lock=True)
    if row is None:
        return False, None
    where = [C.c.id == campaign_id, C.c.business_id == business_id]
    if action == "cancel":
        if row.state not in ("running", "paused"):
            return False, row
        session.execute(update(C).where(*where).values(state="cancelled", updated_at=now()))
        # live calls finish; nothing that is live is touched
        session.execute(
            update(T)
            .where(T.c.campaign_id == campaign_id, T.c.status == "pending")
            .values(status="cancelled", updated_at=now(), finished_at=now())
        )
    else:
        before, after = TRANSITIONS[action]
        if row.state != before:
            return False, row
        session.execute(update(C).where(*where).values(state=after, updated_at=now()))
    finish(session, [campaign_id])
    return True, get(session, business_id, campaign_id)


def finish(session: Session, campaign_ids: list[int] | None = None) -> list[int]:
    """Mark finished every (given) campaign with nothing left to dial or live: a running one
    that is fully prepared becomes completed; a cancelled one gets its finished_at."""
    open_targets = exists().where(T.c.campaign_id == C.c.id, T.c.status.in_(OPEN_STATUSES))
    cond = [
        C.c.finished_at.is_(None),
        ((C.c.state == "running") & C.c.prepared) | (C.c.state == "cancelled"),
        ~open_targets,
    ]
    if campaign_ids is not None:
        cond.append(C.c.id.in_(campaign_ids))
    res = session.execute(
        update(C)
        .where(*cond)
        .values(
            state=case((C.c.state == "running", "completed"), else_=C.c.state),
            finished_at=now(),
            updated_at=now(),
        )
        .returning(C.c.id)
    )
    return list(res.scalars())


# -- summary ----------------------------------------------------------------------------------


def counts(session: Session, campaign_id: int) -> dict[str, int]:
    """Targets by status (skipped ones by reason) and those waiting for a retry."""
    out: dict[str, int] = {}
    for status, reason, n in session.execute(
        select(T.c.status, T.c.skip_reason, func.count())
        .where(T.c.campaign_id == campaign_id)
        .group_by(T.c.status, T.c.skip_reason)
    ):
        out[f"skipped_{reason}" if status == "skipped" else status] = int(n)
    out["retrying"] = int(
        session.execute(
            select(func.count()).where(
                T.c.campaign_id == campaign_id, T.c.status == "pending", T.c.attempts > 0
            )
        ).scalar_one()
    )
    return out


def recent_rate(session: Session, campaign_id: int, window: float = 60.0) -> float:
    """Calls placed per second over the last `window` seconds."""
    since = now() - timedelta(seconds=window)
    n = session.execute(
        select(func.count()).where(and_(T.c.campaign_id == campaign_id, T.c.dialed_at >= since))
    ).scalar_one()
    return round(int(n) / window, 3)
