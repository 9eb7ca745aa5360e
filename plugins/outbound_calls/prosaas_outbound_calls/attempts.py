"""One target's attempts: claimed with a fresh token before ``calls.create``, the call sid
written after, statuses applied in order, given back when no call was placed.

The rules that keep a lead from being called twice and make callbacks safe to replay:

- a claim writes ``attempt_token`` (new each time) and ``slot_token``; every later write names
  the token, so a writer from an older attempt changes nothing;
- a status is applied only when it ranks above the one recorded (queued < initiated < ringing
  < in-progress < any final one), so a late ``ringing`` never overwrites ``completed`` and a
  replayed callback is a no-op;
- the core ``calls`` row is upserted per call sid with the same monotonic rule.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import case, func, literal, select, update
from sqlalchemy.orm import Session

from prosaas_outbound_calls.campaigns import dialect_insert, now, slot_key
from prosaas_outbound_calls.tables import calls, campaigns, targets

if TYPE_CHECKING:
    from sqlalchemy import CursorResult

C, T = campaigns, targets
log = logging.getLogger("prosaas.outbound_calls.attempts")

FINAL = ("completed", "busy", "no-answer", "failed", "canceled")
RANK = {"queued": 0, "initiated": 1, "ringing": 2, "in-progress": 3, **dict.fromkeys(FINAL, 4)}
KNOWN = frozenset(RANK)


def rank(status: str | None) -> int:
    return RANK.get(status or "", -1)


def _rank_sql(expr: Any) -> Any:
    return case(*((expr == s, r) for s, r in RANK.items()), else_=-1)


def new_token() -> str:
    return secrets.token_hex(12)


@dataclass(frozen=True)
class Claimed:
    """A target claimed for one attempt, with what the dial needs."""

    id: int
    campaign_id: int
    business_id: int
    lead_id: int | None
    phone: str
    attempt: int
    token: str
    slot_token: str


def claim(session: Session, campaign_id: int, slot_token: str) -> Claimed | None:
    """The campaign's next due pending target, claimed for a new attempt; None when there is
    none or the campaign is no longer running (a pause takes effect at the next claim)."""
    t = now()
    pick = (
        select(T.c.id)
        .where(T.c.campaign_id == campaign_id, T.c.status == "pending", T.c.next_attempt_at <= t)
        .order_by(T.c.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    running = select(C.c.id).where(C.c.id == campaign_id, C.c.state == "running").exists()
    token = new_token()
    row = session.execute(
        update(T)
        .where(T.c.id == pick, running)
        .values(
            status="dialing",
            attempt_token=token,
            slot_token=slot_token,
            attempts=T.c.attempts + 1,
            claimed_at=t,
            dialed_at=None,
            call_sid=None,
            call_status=None,
            updated_at=t,
        )
        .returning(T.c.id, T.c.business_id, T.c.lead_id, T.c.phone, T.c.attempts)
    ).first()
    if row is None:
        return None
    return Claimed(
        row.id,
        campaign_id,
        row.business_id,
        row.lead_id,
        row.phone,
        row.attempts,
        token,
        slot_token,
    )


def upsert_call(
    session: Session,
    *,
    business_id: int,
    call_sid: str,
    lead_id: int | None,
    status: str | None,
    from_number: str | None,
    to_number: str | None,
) -> None:
    """The core ``calls`` row of an outbound call: created, or brought up to date (its status
    only moves forward; a row another business owns is never touched)."""
    t = now()
    ins = dialect_insert(session)(calls).values(
        business_id=business_id,
        call_sid=call_sid,
        lead_id=lead_id,
        direction="outbound",
        status=status,
        from_number=from_number,
        to_number=to_number,
        created_at=t,
        updated_at=t,
    )
    ex = ins.excluded
    session.execute(
        ins.on_conflict_do_update(
            index_elements=["call_sid"],
            set_={
                "direction": literal("outbound"),
                "lead_id": func.coalesce(calls.c.lead_id, ex.lead_id),
                "from_number": func.coalesce(calls.c.from_number, ex.from_number),
                "to_number": func.coalesce(calls.c.to_number, ex.to_number),
                "status": case(
                    (_rank_sql(ex.status) > _rank_sql(calls.c.status), ex.status),
                    else_=calls.c.status,
                ),
                "updated_at": t,
            },
            where=calls.c.business_id == ex.business_id,
        )
    )


def record_sid(session: Session, c: Claimed, call_sid: str, status: str | None, caller: str) -> str:
    """After calls.create: the sid on the target (unless a callback already brought it) and
    the core call row. Returns ``recorded``; ``adopted`` when the sweep had given the claim
    back meanwhile (the call counts again and must take its slot back); ``lost`` when the
    attempt is no longer this claim's."""
    t = now()
    row = session.execute(
        select(T.c.status, T.c.call_sid)
        .where(T.c.id == c.id, T.c.attempt_token == c.token)
        .with_for_update()
    ).first()
    outcome = "lost"
    if row is not None:
        adopted = row.status == "pending" and row.call_sid is None
        values: dict[str, Any] = {
            "call_sid": row.call_sid or call_sid,
            "call_status": func.coalesce(T.c.call_status, status),
            "dialed_at": func.coalesce(T.c.dialed_at, t),
            "updated_at": t,
        }
        if row.status == "dialing" or adopted:
            values["status"] = "live"
        if adopted:
            values.update(attempts=T.c.attempts + 1, slot_token=c.slot_token)
            log.warning("OUTBOUND_CALL_ADOPTED target=%s call_sid=%s", c.id, call_sid)
        session.execute(update(T).where(T.c.id == c.id).values(**values))
        outcome = "adopted" if adopted else "recorded"
    upsert_call(
        session,
        business_id=c.business_id,
        call_sid=call_sid,
        lead_id=c.lead_id,
        status=status if status in KNOWN else None,
        from_number=caller,
        to_number=c.phone,
    )
    return outcome


def give_back(session: Session, target_id: int, token: str, *, error: str | None = None) -> bool:
    """No call was placed for this attempt: the target is pending again, the attempt not
    counted."""
    res = session.execute(
        update(T)
        .where(T.c.id == target_id, T.c.attempt_token == token, T.c.status == "dialing")
        .where(T.c.call_sid.is_(None))
        .values(
            status="pending",
            attempts=T.c.attempts - 1,
            slot_token=None,
            claimed_at=None,
            error=error,
            updated_at=now(),
        )
    )
    return cast("CursorResult[Any]", res).rowcount == 1


def fail_attempt(session: Session, target_id: int, token: str, error: str) -> bool:
    """The provider refused the call for good (e.g. a number it cannot call)."""
    res = session.execute(
        update(T)
        .where(T.c.id == target_id, T.c.attempt_token == token, T.c.status == "dialing")
        .values(status="failed", error=error[:2000], finished_at=now(), updated_at=now())
    )
    return cast("CursorResult[Any]", res).rowcount == 1


@dataclass(frozen=True)
class Applied:
    """What a status did: `outcome` applied | stale | duplicate | unknown; the slot to free
    when the attempt ended; the campaign to check for completion."""

    outcome: str
    business_id: int | None = None
    campaign_id: int | None = None
    release: tuple[str, str] | None = None  # (slot key, token)
    readd: tuple[str, str] | None = None  # a slot to take back (an adopted live call)
    status: str | None = None


def apply_status(
    session: Session,
    target_id: int,
    token: str,
    call_sid: str,
    status: str,
    *,
    answered_by: str | None = None,
    duration: int | None = None,
) -> Applied:
    """Apply a provider status to the target's attempt `token` and to the call row."""
    row = session.execute(
        select(
            T,
            C.c.state.label("campaign_state"),
            C.c.caller_id,
            C.c.retry_attempts,
            C.c.retry_spacing,
            C.c.retry_on,
        )
        .join(C, C.c.id == T.c.campaign_id)
        .where(T.c.id == target_id)
        .with_for_update(of=T)
    ).first()
    if row is None:
        return Applied("unknown")
    upsert_call(
        session,
        business_id=row.business_id,
        call_sid=call_sid,
        lead_id=row.lead_id,
        status=status,
        from_number=row.caller_id,
        to_number=row.phone,
    )
    base = {"business_id": row.business_id, "campaign_id": row.campaign_id}
    if row.attempt_token != token or row.call_sid not in (None, call_sid):
        return Applied("stale", **base)
    # A claim the sweep gave back because the provider's list did not show its call (yet): the
    # target is still pending under the same token, so nothing has dialed it since. Its call
    # is adopted rather than placed again.
    adopted = row.status == "pending" and row.call_sid is None
    if not adopted and (
        row.status not in ("dialing", "live") or rank(status) <= rank(row.call_status)
    ):
        return Applied("duplicate", **base)
    t = now()
    attempts_made = row.attempts + 1 if adopted else row.attempts
    values: dict[str, Any] = {"call_sid": call_sid, "call_status": status, "updated_at": t}
    readd = None
    if adopted:
        values["attempts"] = attempts_made
        log.warning("OUTBOUND_CALL_ADOPTED target=%s call_sid=%s", target_id, call_sid)
    if row.dialed_at is None:
        values["dialed_at"] = t
    if answered_by:
        values["answered_by"] = answered_by[:32]
    release = None
    if status in FINAL:
        release = (slot_key(row.business_id), row.slot_token) if row.slot_token else None
        if duration is not None:
            values["duration"] = duration
        retry = (
            status in row.retry_on.split(",")
            and attempts_made < row.retry_attempts
            and row.campaign_state in ("running", "paused")
        )
        if retry:
            values.update(
                status="pending",
                slot_token=None,
                next_attempt_at=t + timedelta(seconds=row.retry_spacing),
            )
        else:
            values.update(status=status, finished_at=t)
    else:
        values["status"] = "live"
        if adopted:  # live again without a slot: it takes one back, even above the limit
            values["slot_token"] = token
            readd = (slot_key(row.business_id), token)
    session.execute(update(T).where(T.c.id == target_id).values(**values))
    return Applied("applied", release=release, readd=readd, status=values["status"], **base)
