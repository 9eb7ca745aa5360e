"""Retention: delete finished jobs past their retention, in small batches, after rolling them up.

Which rows go: status ``succeeded``, ``failed`` or ``cancelled`` (never ``queued`` or
``running``: the status is in every statement), ``finished_at`` older than the retention of
that status (``PROSAAS_RETENTION_<STATUS>_DAYS``) or of that job type
(``PROSAAS_RETENTION_OVERRIDES``), and older than the rollup watermark, so every deleted row
is already counted in the rollups.

Why it is safe: nothing needs a finished row. A running job's own row is active; uniqueness
(``unique_per_business``) and the enqueue that answers "already queued" look at active rows
only; a job retried by hand is queued again, so active. A row locked by someone else (a
``jobs retry`` at that moment) is skipped (``SKIP LOCKED``) and taken on a later pass.

How it stays out of the way: each batch is one ``DELETE ... WHERE id IN (SELECT ... ORDER BY
finished_at LIMIT n FOR UPDATE SKIP LOCKED)`` in its own short transaction, a range of the
``finished_at`` index continued from where the last batch stopped (keyset), with a short
pause between batches. It locks only the rows it deletes, which no writer touches: inserts,
claims and finishes of other rows never wait for it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select

from prosaas_core.jobs.history import SETTLE, _param, roll_up, rolled_through
from prosaas_core.models import FINAL_STATUSES

if TYPE_CHECKING:
    from prosaas_core.runtime import Runtime
    from prosaas_core.settings import Settings

log = logging.getLogger("prosaas.history")


@dataclass(frozen=True)
class Rule:
    """Finished rows of `status` (of `job_type`, or of every type but `others`) kept `days`."""

    status: str
    days: float | None
    job_type: str | None = None
    others: frozenset[str] = frozenset()

    @property
    def label(self) -> str:
        return f"{self.job_type or '*'}.{self.status}"


def rules(settings: Settings) -> list[Rule]:
    """The retention rules: one per status, plus one per job type that overrides it."""
    out = []
    overrides = settings.retention_overrides
    for status in FINAL_STATUSES:
        special: dict[str, float | None] = {}
        for (job_type, st), days in overrides.items():
            if st is None:
                special.setdefault(job_type, days)
        for (job_type, st), days in overrides.items():
            if st == status:
                special[job_type] = days  # TYPE.STATUS beats TYPE
        out.append(Rule(status, settings.retention_days.get(status), None, frozenset(special)))
        out += [Rule(status, days, t) for t, days in sorted(special.items())]
    return out


def _where(conn: Any, rule: Rule, limit: datetime) -> list[Any]:
    from prosaas_core.jobs.store import c

    where = [c.status == rule.status, c.finished_at < _param(conn, limit)]
    if rule.job_type is not None:
        where.append(c.job_type == rule.job_type)
    elif rule.others:
        where.append(c.job_type.not_in(sorted(rule.others)))
    return where


def prune(
    rt: Runtime,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    batch: int | None = None,
    pause: float | None = None,
) -> dict[str, Any]:
    """Roll up, then delete what retention allows (count it only, with `dry_run`).

    Returns {"dry_run", "deleted": {"type.status": n}, "total", "batches", "rolled_up"}.
    """
    from prosaas_core.jobs.store import c, utcnow

    now = now or utcnow()
    batch = max(1, int(batch or rt.settings.prune_batch))
    pause = rt.settings.prune_pause if pause is None else pause
    if dry_run:
        rolled = None
        with rt.engine.connect() as conn:
            # what a real run would reach: it rolls up to now - SETTLE first
            through = now - SETTLE
    else:
        rolled = roll_up(rt, now=now)
        with rt.engine.connect() as conn:
            through = rolled_through(conn) or now - SETTLE
    deleted: dict[str, int] = {}
    batches = 0
    for rule in rules(rt.settings):
        if rule.days is None:
            continue
        limit = min(now - timedelta(days=rule.days), through)
        if dry_run:
            with rt.engine.connect() as conn:
                q = (
                    select(c.job_type, func.count())
                    .where(*_where(conn, rule, limit))
                    .group_by(c.job_type)
                )
                for job_type, n in conn.execute(q):
                    deleted[f"{job_type}.{rule.status}"] = int(n)
            continue
        after: datetime | None = None
        while True:
            with rt.engine.begin() as conn:
                where = _where(conn, rule, limit)
                if after is not None:
                    where.append(c.finished_at >= _param(conn, after))
                pick = (
                    select(c.id)
                    .where(*where)
                    .order_by(c.finished_at)
                    .limit(batch)
                    .with_for_update(skip_locked=True)
                )
                gone = conn.execute(
                    delete(c.id.table)
                    .where(c.id.in_(pick.scalar_subquery()))
                    .returning(c.job_type, c.finished_at)
                ).all()
            batches += 1
            for job_type, _ in gone:
                key = f"{job_type}.{rule.status}"
                deleted[key] = deleted.get(key, 0) + 1
            if len(gone) < batch:
                break
            after = max(f for _, f in gone)
            if pause:
                time.sleep(pause)
    total = sum(deleted.values())
    if total and not dry_run:
        log.info("HISTORY PRUNED %d finished job(s) in %d batch(es)", total, batches)
    return {
        "dry_run": dry_run,
        "deleted": dict(sorted(deleted.items())),
        "total": total,
        "batches": batches,
        "rolled_up": rolled,
    }
