"""The ``delete_receipts_all`` handler: keyset batches over the business's receipts."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from sqlalchemy import text

from prosaas_core.leads import batch_size


class DeleteReceiptsAll(BaseModel):
    """No options: every receipt of the job's business is deleted."""

    model_config = ConfigDict(extra="forbid")


# Each statement carries the business; a batch is the id range (last, hi].
_EXTENT = text("SELECT count(*), coalesce(max(id), 0) FROM receipts WHERE business_id = :b")
_PAGE = text(
    "SELECT count(*), max(id) FROM (SELECT id FROM receipts WHERE business_id = :b "
    "AND id > :last AND id <= :upto ORDER BY id LIMIT :n) AS page"
)
_DELETE = text("DELETE FROM receipts WHERE business_id = :b AND id > :last AND id <= :hi")


def delete_receipts_all(ctx) -> dict:
    """Delete every receipt of ``ctx.business_id`` that existed when the job started.

    One transaction per batch holds the delete and the checkpoint, so a resumed job neither
    deletes nor counts a batch twice.
    """
    b, n = ctx.business_id, batch_size(ctx.settings)
    state = dict(ctx.state)
    if "total" not in state:
        with ctx.session() as s:
            total, upto = s.execute(_EXTENT, {"b": b}).one()
            state = {"total": int(total), "upto": int(upto), "last_id": 0, "deleted": 0}
            ctx.checkpoint(state, session=s)
        ctx.log.info("Deleting all %d receipts (tenant=%s)", state["total"], b)
    else:
        ctx.log.info(
            "Resuming from checkpoint: %d of %d receipts deleted (tenant=%s, attempt %s)",
            state["deleted"],
            state["total"],
            b,
            ctx.attempt,
        )
    ctx.progress(state["deleted"], state["total"])
    stopped = False
    while True:
        if ctx.should_stop():
            stopped = True
            break
        with ctx.session() as s:
            args = {"b": b, "last": state["last_id"], "upto": state["upto"], "n": n}
            size, hi = s.execute(_PAGE, args).one()
            if not size:
                break
            deleted = s.execute(_DELETE, {"b": b, "last": state["last_id"], "hi": hi}).rowcount
            state = {**state, "last_id": int(hi), "deleted": state["deleted"] + deleted}
            ctx.checkpoint(state, session=s)
        ctx.progress(state["deleted"], state["total"])
    if stopped:
        ctx.log.info("Receipt deletion stopped after %d receipts (tenant=%s)", state["deleted"], b)
    else:
        ctx.log.info("Deleted %d receipts successfully (tenant=%s)", state["deleted"], b)
    return {"deleted": state["deleted"], "total": state["total"], "stopped": stopped}
