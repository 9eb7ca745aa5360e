"""``broadcast-scheduler``: starts broadcasts whose ``scheduled_at`` has come.

Every worker runs it; each due broadcast is taken by one of them (``FOR UPDATE SKIP LOCKED``)
and enqueued through the public `prosaas_core.enqueue`. A crash between the enqueue and the
commit enqueues the broadcast again later: harmless, since each recipient is claimed once
whatever the number of jobs sending it.
"""

from __future__ import annotations

from sqlalchemy import select

from prosaas_broadcast import store
from prosaas_broadcast.tables import broadcasts as B

INTERVAL_KEY = "BROADCAST_SCHEDULER_INTERVAL"


def due(s, limit: int = 20) -> list[dict]:
    rows = s.execute(
        select(B)
        .where(B.c.status == "scheduled", B.c.scheduled_at <= store.now())
        .order_by(B.c.scheduled_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [dict(r._mapping) for r in rows]


def tick(rt) -> int:
    """Enqueue every due broadcast; how many were."""
    from prosaas_core import enqueue

    started = 0
    with rt.session() as s:
        for b in due(s):
            payload = {
                **b["selection"],
                "channel": b["channel"],
                "template": b["template"],
                "provider": b["provider"],
                "broadcast_id": b["id"],
            }
            if b["rate"] is not None:
                payload["rate"] = b["rate"]
            res = enqueue(rt, "broadcast", b["business_id"], payload)
            store.set_broadcast(s, b["id"], status="queued", job_id=b["job_id"] or res.id)
            started += 1
    return started


def run(ctx) -> None:
    interval = ctx.settings.get_duration(INTERVAL_KEY, 5.0, minimum=0.01)
    while not ctx.stop_event.is_set():
        n = tick(ctx.runtime)
        if n:
            ctx.log.info("BROADCAST_SCHEDULED_STARTED count=%d", n)
        ctx.stop_event.wait(interval)
