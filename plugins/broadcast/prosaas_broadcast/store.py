"""Reads and writes of the plugin's tables. Every statement names the business or a broadcast
the caller already scoped to its business.

A recipient's life: ``pending`` -> (claimed: ``sending`` with a fresh ``attempt_token``) ->
``sent`` | ``failed`` | back to ``pending`` (retry later) | stays ``sending`` with a check time
(the outcome is unknown). Only the holder of the current token records an outcome, each in
its own short transaction, so a worker that lost its claim can change nothing.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.engine import Connection

if TYPE_CHECKING:
    from sqlalchemy import CursorResult
    from sqlalchemy.orm import Session

from prosaas_broadcast.tables import FINAL_BROADCAST, broadcasts, opt_outs, recipients

R = recipients
B = broadcasts
MAX_ERROR = 1000


def now() -> datetime:
    return datetime.now(UTC)


def _insert(conn: Any, table: Any):
    name = conn.get_bind().dialect.name if hasattr(conn, "get_bind") else conn.dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]  # same API
    return insert(table)


# -- broadcasts -------------------------------------------------------------------------------


def create_broadcast(s: Any, business_id: int, **values: Any) -> int:
    row = {
        "business_id": business_id,
        "status": "queued",
        "cancel_requested": False,
        "created_at": now(),
        **values,
    }
    return s.execute(B.insert().values(**row).returning(B.c.id)).scalar_one()


def broadcast_for_job(s: Any, business_id: int, job_id: int, **values: Any) -> int:
    """The broadcast of `job_id`, created once whatever the job's retries."""
    stmt = _insert(s, B).values(
        business_id=business_id,
        job_id=job_id,
        status="queued",
        cancel_requested=False,
        created_at=now(),
        **values,
    )
    s.execute(stmt.on_conflict_do_nothing(index_elements=["job_id"]))
    return s.execute(select(B.c.id).where(B.c.job_id == job_id)).scalar_one()


def get_broadcast(s: Any, business_id: int, broadcast_id: int) -> dict | None:
    row = s.execute(select(B).where(B.c.business_id == business_id, B.c.id == broadcast_id)).first()
    return dict(row._mapping) if row else None


def list_broadcasts(s: Any, business_id: int, *, before: int | None, limit: int) -> list[dict]:
    q = select(B).where(B.c.business_id == business_id)
    if before is not None:
        q = q.where(B.c.id < before)
    return [dict(r._mapping) for r in s.execute(q.order_by(B.c.id.desc()).limit(limit))]


def set_broadcast(s: Any, broadcast_id: int, **values: Any) -> None:
    s.execute(update(B).where(B.c.id == broadcast_id).values(**values))


def start_sending(s: Any, broadcast_id: int, total: int, parts: int) -> None:
    s.execute(
        update(B)
        .where(B.c.id == broadcast_id, B.c.status.in_(("queued", "preparing")))
        .values(status="sending", total=total, parts=parts)
    )


def request_cancel(s: Any, business_id: int, broadcast_id: int) -> bool:
    """Ask the senders to stop; False when the broadcast is already over."""
    done = s.execute(
        update(B)
        .where(
            B.c.business_id == business_id,
            B.c.id == broadcast_id,
            B.c.status.not_in(FINAL_BROADCAST),
        )
        .values(cancel_requested=True)
    ).rowcount
    # one that has not started (scheduled, or queued with no recipients yet) ends here
    s.execute(
        update(B)
        .where(B.c.id == broadcast_id, B.c.status.in_(("scheduled",)))
        .values(status="cancelled", finished_at=now())
    )
    return bool(done)


def cancel_requested(conn: Any, broadcast_id: int) -> bool:
    return bool(conn.execute(select(B.c.cancel_requested).where(B.c.id == broadcast_id)).scalar())


def finish(conn: Any, broadcast_id: int) -> bool:
    """Mark the broadcast over (cancelled when that was asked) once nothing is left to send;
    True for the caller whose statement did it."""
    left = conn.execute(
        select(func.count())
        .select_from(R)
        .where(R.c.broadcast_id == broadcast_id, R.c.status.in_(("pending", "sending")))
    ).scalar_one()
    if left:
        return False
    return bool(
        conn.execute(
            update(B)
            .where(B.c.id == broadcast_id, B.c.status.not_in(FINAL_BROADCAST))
            .values(
                status=case((B.c.cancel_requested, "cancelled"), else_="succeeded"),
                finished_at=now(),
            )
        ).rowcount
    )


def counts(conn: Any, broadcast_id: int) -> tuple[dict[str, int], dict[str, int]]:
    """Recipients by status, and skipped ones by reason."""
    by_status = {s: 0 for s in ("pending", "sending", "sent", "delivered", "failed", "skipped")}
    skipped: dict[str, int] = {}
    rows = conn.execute(
        select(R.c.status, R.c.skip_reason, func.count())
        .where(R.c.broadcast_id == broadcast_id)
        .group_by(R.c.status, R.c.skip_reason)
    )
    for status, reason, n in rows:
        by_status[status] = by_status.get(status, 0) + n
        if status == "skipped":
            skipped[reason or "unknown"] = skipped.get(reason or "unknown", 0) + n
    return by_status, skipped


# -- recipients: preparing ---------------------------------------------------------------------


def add_recipients(s: Any, rows: list[dict]) -> None:
    """Insert recipient rows; a lead already in the broadcast (a resumed batch) is left as is."""
    if rows:
        stamp = now()
        for r in rows:
            r.setdefault("created_at", stamp)
            r.setdefault("updated_at", stamp)
            r.setdefault("attempts", 0)
        s.execute(
            _insert(s, R)
            .values(rows)
            .on_conflict_do_nothing(index_elements=["broadcast_id", "lead_id"])
        )


def phones_in(s: Any, broadcast_id: int, phones: list[str]) -> set[str]:
    if not phones:
        return set()
    rows = s.execute(
        select(R.c.phone).where(R.c.broadcast_id == broadcast_id, R.c.phone.in_(phones))
    )
    return {p for (p,) in rows}


def opted_out(s: Any, business_id: int, phones: list[str]) -> set[str]:
    if not phones:
        return set()
    rows = s.execute(
        select(opt_outs.c.phone).where(
            opt_outs.c.business_id == business_id, opt_outs.c.phone.in_(phones)
        )
    )
    return {p for (p,) in rows}


def add_opt_outs(s: Any, business_id: int, phones: list[str], source: str) -> int:
    if not phones:
        return 0
    rows = [
        {"business_id": business_id, "phone": p, "source": source, "created_at": now()}
        for p in phones
    ]
    return s.execute(
        _insert(s, opt_outs)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["business_id", "phone"])
    ).rowcount


def remove_opt_outs(s: Any, business_id: int, phones: list[str]) -> int:
    return s.execute(
        opt_outs.delete().where(opt_outs.c.business_id == business_id, opt_outs.c.phone.in_(phones))
    ).rowcount


def list_recipients(
    s: Any, broadcast_id: int, *, status: str | None, after: int, limit: int
) -> list[dict]:
    q = select(R).where(R.c.broadcast_id == broadcast_id, R.c.id > after)
    if status is not None:
        q = q.where(R.c.status == status)
    return [dict(r._mapping) for r in s.execute(q.order_by(R.c.id).limit(limit))]


# -- recipients: sending -----------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """A recipient this sender holds: only `token` may record its outcome."""

    id: int
    lead_id: int
    phone: str
    body: str
    attempts: int
    token: str
    #: the attempt whose outcome is unknown began then (a stuck ``sending`` taken over), else None
    uncertain_since: datetime | None


_CLAIM_COLS = (R.c.id, R.c.lead_id, R.c.phone, R.c.body, R.c.attempts, R.c.sending_since)


#: the hot statements as plain SQL on PostgreSQL: a driver cursor skips SQLAlchemy's per-call
#: overhead, measured at about a third of a message's CPU (the sending rate is CPU-bound)
_PG_CLAIM = {
    status: (
        "UPDATE broadcast_recipients SET status = 'sending', attempt_token = %(token)s, "
        "next_attempt_at = %(check)s, attempts = attempts + 1, updated_at = %(now)s"
        + (", sending_since = %(now)s" if status == "pending" else "")
        + " WHERE id = (SELECT id FROM broadcast_recipients WHERE broadcast_id = %(b)s AND "
        f"status = '{status}' AND "
        + (
            "(next_attempt_at IS NULL OR next_attempt_at <= %(now)s)"
            if status == "pending"
            else "next_attempt_at <= %(now)s"
        )
        + f" ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) AND status = '{status}' "
        "RETURNING id, lead_id, phone, body, attempts, sending_since"
    )
    for status in ("pending", "sending")
}
_PG_SENT = (
    "UPDATE broadcast_recipients SET status = 'sent', provider_message_id = %(mid)s, "
    "sent_at = %(now)s, next_attempt_at = NULL, error = NULL, updated_at = %(now)s "
    "WHERE id = %(id)s AND attempt_token = %(token)s AND status = 'sending'"
)


def _cursor(conn: Any):
    """A driver cursor on the session's connection (in its transaction), or None off
    PostgreSQL."""
    if conn.get_bind().dialect.name != "postgresql":
        return None
    return conn.connection().connection.driver_connection.cursor()


def claim(conn: Connection, broadcast_id: int, stale: float) -> Claim | None:
    """Take the next due recipient of the broadcast: a pending one, else one left ``sending``
    past its check time (a dead or timed-out attempt). One statement each; SKIP LOCKED lets
    many senders claim side by side."""
    t = now()
    token = secrets.token_hex(12)
    cur = _cursor(conn)
    if cur is not None:
        args = {"token": token, "check": t + timedelta(seconds=stale), "now": t, "b": broadcast_id}
        with cur:
            for status in ("pending", "sending"):
                cur.execute(_PG_CLAIM[status], args)
                row = cur.fetchone()
                if row is not None:
                    rid, lead_id, phone, body, attempts, since = row
                    uncertain = _aware(since) if status == "sending" else None
                    return Claim(rid, lead_id, phone, body, attempts, token, uncertain)
        return None
    due = or_(R.c.next_attempt_at.is_(None), R.c.next_attempt_at <= t)
    for status in ("pending", "sending"):
        pick = (
            select(R.c.id)
            .where(R.c.broadcast_id == broadcast_id, R.c.status == status)
            .where(due if status == "pending" else R.c.next_attempt_at <= t)
            .order_by(R.c.id)
            .limit(1)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        values: dict[str, Any] = {
            "status": "sending",
            "attempt_token": token,
            "next_attempt_at": t + timedelta(seconds=stale),
            "attempts": R.c.attempts + 1,
            "updated_at": t,
        }
        if status == "pending":
            values["sending_since"] = t
        row = conn.execute(
            update(R)
            .where(R.c.id == pick, R.c.status == status)
            .values(**values)
            .returning(*_CLAIM_COLS)
        ).first()
        if row is not None:
            return Claim(
                row.id,
                row.lead_id,
                row.phone,
                row.body,
                row.attempts,
                token,
                _aware(row.sending_since) if status == "sending" else None,
            )
    return None


def _aware(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _mine(c: Claim):
    return and_(R.c.id == c.id, R.c.attempt_token == c.token)


def mark_sent(conn: Connection, c: Claim, message_id: str) -> bool:
    t = now()
    cur = _cursor(conn)
    if cur is not None:
        with cur:
            cur.execute(_PG_SENT, {"mid": message_id, "now": t, "id": c.id, "token": c.token})
            done = cur.rowcount
        if done:
            return True
    done = conn.execute(
        update(R)
        .where(_mine(c), R.c.status == "sending")
        .values(
            status="sent",
            provider_message_id=message_id,
            sent_at=t,
            next_attempt_at=None,
            error=None,
            updated_at=t,
        )
    ).rowcount
    if not done:  # a status callback got there first: keep its status, record the id
        done = conn.execute(
            update(R)
            .where(_mine(c))
            .values(provider_message_id=message_id, sent_at=t, updated_at=t)
        ).rowcount
    return bool(done)


def mark_failed(conn: Connection, c: Claim, error: str) -> bool:
    return bool(
        conn.execute(
            update(R)
            .where(_mine(c), R.c.status == "sending")
            .values(
                status="failed", error=error[:MAX_ERROR], next_attempt_at=None, updated_at=now()
            )
        ).rowcount
    )


def mark_skipped(conn: Connection, c: Claim, reason: str, error: str | None = None) -> bool:
    return bool(
        conn.execute(
            update(R)
            .where(_mine(c), R.c.status == "sending")
            .values(
                status="skipped",
                skip_reason=reason,
                error=error,
                next_attempt_at=None,
                updated_at=now(),
            )
        ).rowcount
    )


def mark_retry(
    conn: Connection, c: Claim, error: str | None, delay: float, *, refund: bool = False
) -> bool:
    """Back to ``pending``, due in `delay` seconds; `refund` when the provider refused before
    trying (429): the attempt does not count."""
    t = now()
    values: dict[str, Any] = {
        "status": "pending",
        "attempt_token": None,
        "next_attempt_at": t + timedelta(seconds=delay),
        "updated_at": t,
    }
    if error is not None:
        values["error"] = error[:MAX_ERROR]
    if refund:
        values["attempts"] = R.c.attempts - 1
    return bool(
        conn.execute(update(R).where(_mine(c), R.c.status == "sending").values(**values)).rowcount
    )


def mark_uncertain(conn: Connection, c: Claim, error: str, delay: float) -> bool:
    """The outcome is unknown (timeout): stays ``sending``, checked with the provider in
    `delay` seconds before anything is sent again."""
    t = now()
    return bool(
        conn.execute(
            update(R)
            .where(_mine(c), R.c.status == "sending")
            .values(
                next_attempt_at=t + timedelta(seconds=delay),
                error=error[:MAX_ERROR],
                updated_at=t,
            )
        ).rowcount
    )


def skip_pending(conn: Connection, broadcast_id: int, reason: str) -> int:
    return conn.execute(
        update(R)
        .where(R.c.broadcast_id == broadcast_id, R.c.status == "pending")
        .values(status="skipped", skip_reason=reason, next_attempt_at=None, updated_at=now())
    ).rowcount


def next_due(conn: Connection, broadcast_id: int) -> tuple[int, datetime | None]:
    """How many recipients are not final yet, and when the earliest of them is due."""
    n, due = conn.execute(
        select(func.count(), func.min(R.c.next_attempt_at)).where(
            R.c.broadcast_id == broadcast_id, R.c.status.in_(("pending", "sending"))
        )
    ).one()
    return int(n), _aware(due)


def by_recipient(conn: Connection | Session, recipient_id: int) -> dict | None:
    row = conn.execute(select(R).where(R.c.id == recipient_id)).first()
    return dict(row._mapping) if row else None


def record_status(
    conn: Connection | Session, recipient_id: int, status: str, sid: str, error: str | None
) -> int:
    """A delivery report: ``delivered`` or ``failed`` (a failed one never turns delivered
    again, a delivered one may still fail: carriers report undelivered late)."""
    t = now()
    values: dict[str, Any] = {"status": status, "updated_at": t, "provider_message_id": sid}
    if status == "delivered":
        values["delivered_at"] = t
        allowed: tuple[str, ...] = ("sending", "sent")
    else:
        values["error"] = (error or "failed")[:MAX_ERROR]
        allowed = ("sending", "sent", "delivered")
    done = conn.execute(
        update(R).where(R.c.id == recipient_id, R.c.status.in_(allowed)).values(**values)
    )
    return cast("CursorResult[Any]", done).rowcount
