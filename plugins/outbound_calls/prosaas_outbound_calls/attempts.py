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

from prosaas_core.store import Query
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


def lock_due(session: Session, campaign_id: int, n: int) -> list[int]:
    """Up to `n` of the campaign's next due pending targets, locked for this transaction (the
    first step of a claim: slots are only taken for targets there are); none while the
    campaign is not running, so a pause takes effect at the next claim."""
    running = select(C.c.id).where(C.c.id == campaign_id, C.c.state == "running").exists()
    return list(
        session.execute(
            select(T.c.id)
            .where(
                T.c.campaign_id == campaign_id,
                T.c.status == "pending",
                T.c.next_attempt_at <= now(),
                running,
            )
            .order_by(T.c.id)
            .limit(n)
            .with_for_update(of=T, skip_locked=True)
        ).scalars()
    )


def claim_locked(
    session: Session, campaign_id: int, ids: list[int], slot_tokens: list[str]
) -> list[Claimed]:
    """Targets `ids` (locked by `lock_due`), each claimed for a new attempt with its own slot
    token (pairwise), in one statement."""
    if not ids:
        return []
    t = now()
    tokens = {i: (new_token(), slot) for i, slot in zip(ids, slot_tokens, strict=True)}
    rows = session.execute(
        update(T)
        .where(T.c.id.in_(ids), T.c.status == "pending")
        .values(
            status="dialing",
            attempt_token=case(*((T.c.id == i, a) for i, (a, _) in tokens.items())),
            slot_token=case(*((T.c.id == i, sl) for i, (_, sl) in tokens.items())),
            attempts=T.c.attempts + 1,
            claimed_at=t,
            dialed_at=None,
            call_sid=None,
            call_status=None,
            updated_at=t,
        )
        .returning(T.c.id, T.c.business_id, T.c.lead_id, T.c.phone, T.c.attempts)
    ).all()
    return sorted(
        (
            Claimed(r.id, campaign_id, r.business_id, r.lead_id, r.phone, r.attempts, *tokens[r.id])
            for r in rows
        ),
        key=lambda c: c.id,
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
    along: Any | None = None,
) -> None:
    """The core ``calls`` row of an outbound call: created, or brought up to date (its status
    only moves forward; a row another business owns is never touched). `along`, an UPDATE of
    the target, goes in the same statement on PostgreSQL (one round trip less per callback)."""
    t = now()
    if along is not None and session.get_bind().dialect.name != "postgresql":
        session.execute(along)
        along = None
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
    if along is not None:
        ins = ins.add_cte(along.cte("target_update"))
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
    outcome, along = "lost", None
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
        along = update(T).where(T.c.id == c.id).values(**values)
        outcome = "adopted" if adopted else "recorded"
    upsert_call(
        session,
        business_id=c.business_id,
        call_sid=call_sid,
        lead_id=c.lead_id,
        status=status if status in KNOWN else None,
        from_number=caller,
        to_number=c.phone,
        along=along,
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


def _rank_case(column: str) -> str:
    whens = " ".join(f"WHEN '{s}' THEN {r}" for s, r in RANK.items())
    return f"(CASE {column} {whens} ELSE -1 END)"


_CALL_ROW_CONFLICT = f"""
  ON CONFLICT (call_sid) DO UPDATE SET
     direction = 'outbound', lead_id = COALESCE(k.lead_id, EXCLUDED.lead_id),
     from_number = COALESCE(k.from_number, EXCLUDED.from_number),
     to_number = COALESCE(k.to_number, EXCLUDED.to_number),
     status = CASE WHEN {_rank_case("EXCLUDED.status")} > {_rank_case("k.status")}
                   THEN EXCLUDED.status ELSE k.status END,
     updated_at = %(now)s
   WHERE k.business_id = EXCLUDED.business_id"""

_CALL_ROW_COLUMNS = """INSERT INTO calls AS k (business_id, call_sid, lead_id, direction, status,
                          from_number, to_number, created_at, updated_at)"""

#: `apply_progress` in one statement: the target moves forward only when the attempt, the sid
#: and the rank allow (the row lock is taken and the condition checked again by the UPDATE
#: itself), and the call row follows it (`upsert_call`)
_PROGRESS_SQL = f"""
WITH t AS (
  UPDATE outbound_targets AS t
     SET call_sid = %(sid)s, call_status = %(status)s, status = 'live',
         dialed_at = COALESCE(t.dialed_at, %(now)s),
         answered_by = COALESCE(%(answered_by)s, t.answered_by), updated_at = %(now)s
    FROM outbound_campaigns AS c
   WHERE t.id = %(id)s AND t.attempt_token = %(token)s AND c.id = t.campaign_id
     AND t.status IN ('dialing', 'live') AND (t.call_sid IS NULL OR t.call_sid = %(sid)s)
     AND {_rank_case("t.call_status")} < %(rank)s
  RETURNING t.business_id, t.campaign_id, t.lead_id, t.phone, c.caller_id
), call_row AS (
  {_CALL_ROW_COLUMNS}
  SELECT business_id, %(sid)s, lead_id, 'outbound', %(status)s, caller_id, phone,
         %(now)s, %(now)s FROM t
  {_CALL_ROW_CONFLICT}
)
SELECT business_id, campaign_id FROM t
"""

#: `record_sid` in one statement for a claim still the target's (not given back meanwhile)
_SID_SQL = f"""
WITH t AS (
  UPDATE outbound_targets
     SET call_sid = COALESCE(call_sid, %(sid)s), call_status = COALESCE(call_status, %(status)s),
         dialed_at = COALESCE(dialed_at, %(now)s), updated_at = %(now)s,
         status = CASE WHEN status = 'dialing' THEN 'live' ELSE status END
   WHERE id = %(id)s AND attempt_token = %(token)s AND NOT (status = 'pending' AND call_sid IS NULL)
  RETURNING id
), call_row AS (
  {_CALL_ROW_COLUMNS}
  VALUES (%(business_id)s, %(sid)s, %(lead_id)s, 'outbound', %(call_status)s, %(caller)s,
          %(phone)s, %(now)s, %(now)s)
  {_CALL_ROW_CONFLICT}
)
SELECT count(*) FROM t
"""

_PROGRESS = Query.of("apply_progress", _PROGRESS_SQL)
_SID = Query.of("record_sid", _SID_SQL)


def record_sid_fast(
    engine: Any, c: Claimed, call_sid: str, status: str | None, caller: str
) -> bool:
    """`record_sid` for its common case (the claim is still the target's), in one autocommit
    round trip on PostgreSQL. False when that is not the case (or on SQLite): `record_sid`
    then decides, with the row locked."""
    from prosaas_core.store import connect

    if engine.dialect.name != "postgresql":
        return False
    params = {
        "id": c.id,
        "token": c.token,
        "sid": call_sid,
        "status": status,
        "call_status": status if status in KNOWN else None,
        "now": now(),
        "business_id": c.business_id,
        "lead_id": c.lead_id,
        "caller": caller,
        "phone": c.phone,
    }
    with connect(engine) as db:
        return bool(db.scalar(_SID, params) == 1)


def apply_progress(
    engine: Any,
    target_id: int,
    token: str,
    call_sid: str,
    status: str,
    *,
    answered_by: str | None = None,
) -> Applied | None:
    """The common case of a progress callback (``initiated``, ``ringing``, ``in-progress``
    moving a dialing or live attempt forward), in one autocommit round trip on PostgreSQL:
    what `apply_status` does for it. None when it did not apply as such (stale, duplicate,
    an adopted claim, SQLite): `apply_status` then decides, with the row locked."""
    from prosaas_core.store import connect

    if status in FINAL or engine.dialect.name != "postgresql":
        return None
    params = {
        "id": target_id,
        "token": token,
        "sid": call_sid,
        "status": status,
        "rank": rank(status),
        "now": now(),
        "answered_by": answered_by[:32] if answered_by else None,
    }
    with connect(engine) as db:
        row = db.one(_PROGRESS, params)
    if row is None:
        return None
    return Applied("applied", business_id=row[0], campaign_id=row[1], status="live")


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

    def call_row(along: Any | None = None) -> None:
        # the call row follows every callback, even a stale or duplicate one (monotonic)
        upsert_call(
            session,
            business_id=row.business_id,
            call_sid=call_sid,
            lead_id=row.lead_id,
            status=status,
            from_number=row.caller_id,
            to_number=row.phone,
            along=along,
        )

    base = {"business_id": row.business_id, "campaign_id": row.campaign_id}
    if row.attempt_token != token or row.call_sid not in (None, call_sid):
        call_row()
        return Applied("stale", **base)
    # A claim the sweep gave back because the provider's list did not show its call (yet): the
    # target is still pending under the same token, so nothing has dialed it since. Its call
    # is adopted rather than placed again.
    adopted = row.status == "pending" and row.call_sid is None
    if not adopted and (
        row.status not in ("dialing", "live") or rank(status) <= rank(row.call_status)
    ):
        call_row()
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
    call_row(update(T).where(T.c.id == target_id).values(**values))
    return Applied("applied", release=release, readd=readd, status=values["status"], **base)
