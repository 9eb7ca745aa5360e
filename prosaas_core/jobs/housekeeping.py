"""The core history task: roll up finished jobs, then prune them, once per occurrence of
``PROSAAS_HISTORY_CRON`` across every worker.

It rides on the schedules machinery rather than a lock of its own: the task is the core
schedule ``prosaas-history`` (a row of ``prosaas_schedules`` with source "core", listed by
``prosaas schedules list``, paused and resumed like any other), and an occurrence runs on the
one worker whose insert of its ``prosaas_schedule_runs`` row wins (the unique key schedule x
occurrence x business, business 0 here: the task is not any business's). Unlike other
schedules it fires no job (a job needs a business); the winning worker runs it in this thread,
so a long first prune never delays the scheduler's ticks. A worker killed mid-task loses
nothing: the next occurrence rolls up and prunes from where the watermark and the rows are.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from prosaas_core.jobs.scheduler import Scheduler

if TYPE_CHECKING:
    from prosaas_core.runtime import Runtime

log = logging.getLogger("prosaas.history")

NAME = "prosaas-history"
SOURCE = "core"


def claim(rt: Runtime, worker: str, *, now: datetime | None = None) -> datetime | None:
    """The occurrence this worker is to run now, or None (not due, paused, or another
    worker's)."""
    from prosaas_core.jobs.scheduler import _insert_ignore
    from prosaas_core.jobs.store import utcnow
    from prosaas_core.models import ScheduleRow, ScheduleRun
    from prosaas_core.schedules import _aware, ensure_plugin_rows, previous_occurrence

    now = now or utcnow()
    with rt.session() as s:
        try:
            with s.begin_nested():  # workers starting together may race to create the rows
                ensure_plugin_rows(rt, s)
        except IntegrityError:
            pass  # another worker made them
        row = s.scalars(
            select(ScheduleRow).where(ScheduleRow.source == SOURCE, ScheduleRow.name == NAME)
        ).one()
        if row.paused:
            return None
        occurrence = previous_occurrence(rt.settings.history_cron, "UTC", now)
        seen = _aware(row.fired_through)
        if seen is not None and occurrence <= seen:
            return None
        won = _insert_ignore(
            s.connection(),
            ScheduleRun.__table__,
            [{"schedule_id": row.id, "occurrence_at": occurrence, "business_id": 0,
              "fired_by": worker}],
            [ScheduleRun.__table__.c.id],
        )  # fmt: skip
        if not won:
            return None
        row.fired_through = occurrence
    return occurrence


def run(rt: Runtime) -> dict:
    """Roll up and prune now (what one occurrence does)."""
    from prosaas_core.jobs.prune import prune

    return prune(rt)


class Housekeeper(Scheduler):
    """The thread of one worker that runs the history task when its occurrence falls to it
    (looking as often as the scheduler ticks: one indexed read when nothing is due)."""

    what = "history"
    log = log

    def once(self) -> None:
        occurrence = claim(self.rt, self.worker)
        if occurrence is not None:
            out = run(self.rt)
            log.info(
                "HISTORY occurrence=%s rolled_up=%s pruned=%s",
                occurrence.isoformat(), (out["rolled_up"] or {}).get("rows"), out["total"],
            )  # fmt: skip
