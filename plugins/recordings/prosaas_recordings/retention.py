"""``recordings_retention``: delete one business's recording files older than its retention.

The retention is ``RECORDINGS_RETENTION_DAYS`` (0 keeps recordings forever), or the payload's
``days`` (an operator's own schedule for one business, e.g. ``--payload '{"days": 7}'``). The
call rows stay, with ``recording_status = 'deleted'`` and no path: history is kept, the audio
is not. Batches of calls are checkpointed, so a killed attempt resumes where it stopped.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, Field
from sqlalchemy import select, update

from prosaas_core.bounds import JsonFloat
from prosaas_recordings.config import RecordingsConfig
from prosaas_recordings.tables import calls

BATCH = 500


class Retention(BaseModel):
    days: Annotated[JsonFloat, Field(ge=0, le=36500)] | None = None


def run(ctx) -> dict:
    cfg = RecordingsConfig.from_settings(ctx.settings)
    days = ctx.payload.days if ctx.payload.days is not None else cfg.retention_days
    if not days:
        return {"deleted": 0, "kept_forever": True}
    cutoff = datetime.now(UTC) - timedelta(days=days)
    after = int(ctx.state.get("after", 0))
    deleted = int(ctx.state.get("deleted", 0))
    root = cfg.recordings_dir.resolve()
    while not ctx.should_stop():
        with ctx.session() as s:
            rows = s.execute(
                select(calls.c.id, calls.c.recording_path)
                .where(
                    calls.c.business_id == ctx.business_id,
                    calls.c.id > after,
                    calls.c.recording_path.is_not(None),
                    calls.c.created_at < cutoff,
                )
                .order_by(calls.c.id)
                .limit(BATCH)
            ).all()
            if not rows:
                break
            for _, path in rows:
                file = Path(path).resolve()
                if file.is_relative_to(root):  # never outside RECORDINGS_DIR
                    file.unlink(missing_ok=True)
            s.execute(
                update(calls)
                .where(calls.c.id.in_([r[0] for r in rows]))
                .values(recording_path=None, recording_status="deleted",
                        updated_at=datetime.now(UTC))
            )  # fmt: skip
            after, deleted = rows[-1][0], deleted + len(rows)
            ctx.checkpoint({"after": after, "deleted": deleted}, session=s)
        ctx.progress(deleted)
    return {"deleted": deleted, "days": days}
