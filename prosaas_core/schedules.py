"""Schedules: cron definitions from plugins (``prosaas_schedules``), operators (``prosaas
schedules add``) and businesses (``/api/schedules``), their occurrences, and their state.

Cron expressions have 5 fields (minute hour day month weekday) or 6, the sixth being seconds,
and are read by croniter in the schedule's IANA time zone. Across a DST change, a local time
that does not exist (02:30 on a spring-forward night) fires at the first valid time after it
(03:00); a local time that happens twice (01:30 on a fall-back night) fires once when the cron
names its hours, and in each real hour when its hour field is a wildcard (``0 * * * *`` fires 25
times that day).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, overload

from prosaas_core.errors import ConflictError, NotFoundError, TimingError

if TYPE_CHECKING:
    from prosaas_core.models import ScheduleRow
    from prosaas_core.runtime import Runtime

CATCH_UP = ("skip", "once", "all")
#: the job_type shown for the core history schedule (not a job type: it runs in the worker)
CORE_TASK = "(core: roll up and prune history)"
#: occurrences looked at in one go; a schedule further behind catches up over several ticks
SCAN_CAP = 1000


def _zone(name: str):
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise TimingError(f"unknown time zone {name!r}") from None


def check_definition(cron: str, timezone: str, catch_up: str, jitter: float) -> None:
    """TimingError unless the cron expression, time zone, catch-up policy and jitter are valid."""
    from croniter import croniter

    if not isinstance(cron, str) or len(cron) > 120 or not croniter.is_valid(cron):
        raise TimingError(f"invalid cron expression {cron!r}")
    _zone(timezone)
    if catch_up not in CATCH_UP:
        raise TimingError(f"catch_up must be one of {', '.join(CATCH_UP)}, got {catch_up!r}")
    if not isinstance(jitter, int | float) or not 0 <= jitter <= 3600:
        raise TimingError(f"jitter must be 0 to 3600 seconds, got {jitter!r}")


def occurrences(cron: str, timezone: str, after: datetime, upto: datetime) -> Iterator[datetime]:
    """Occurrences strictly after `after` and at or before `upto`, as aware UTC datetimes, at
    most SCAN_CAP of them."""
    from croniter import croniter

    tz = _zone(timezone)
    it = croniter(cron, after.astimezone(tz))
    # A cron that names its hours means wall-clock times: the second pass of a repeated hour
    # (fall-back) is not another occurrence. A wildcard hour means every real hour, both passes.
    fields = cron.split()
    wall_clock = len(fields) >= 2 and not fields[1].startswith("*")
    previous_wall = None
    for _ in range(SCAN_CAP):
        local = it.get_next(datetime)
        wall = local.replace(tzinfo=None)
        if wall_clock and wall == previous_wall:
            continue
        previous_wall = wall
        nxt = local.astimezone(UTC)
        if nxt > upto:
            return
        yield nxt


def next_occurrence(cron: str, timezone: str, after: datetime) -> datetime:
    from croniter import croniter

    return croniter(cron, after.astimezone(_zone(timezone))).get_next(datetime).astimezone(UTC)


def previous_occurrence(cron: str, timezone: str, before: datetime) -> datetime:
    from croniter import croniter

    return croniter(cron, before.astimezone(_zone(timezone))).get_prev(datetime).astimezone(UTC)


@dataclass(frozen=True)
class Effective:
    """A schedule as the scheduler runs it: its row (id, paused, progress) and its definition
    (the row's for operator and business schedules, the plugin's code for plugin ones)."""

    id: int
    name: str
    source: str
    business_id: int | None
    cron: str
    job_type: str
    payload: dict | None
    per_business: bool
    timezone: str
    catch_up: str
    jitter: float
    paused: bool
    fired_through: datetime | None
    created_at: datetime


@overload
def _aware(value: datetime) -> datetime: ...
@overload
def _aware(value: None) -> None: ...
def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)  # SQLite: naive UTC


def effective(rt: Runtime, rows: list[ScheduleRow]) -> list[Effective]:
    """Every schedule to run: rows merged with the installed plugins' definitions. A plugin
    row whose plugin is gone is left out (kept, so its history stays)."""
    plugin = rt.registry.schedules
    out = []
    for r in rows:
        if r.source == "core":  # prosaas_core.jobs.housekeeping: runs in a worker, no job
            cron, job_type, payload, per_business = rt.settings.history_cron, CORE_TASK, None, False
            tz, catch_up, jitter = "UTC", "skip", 0.0
        elif r.source == "plugin":
            d = plugin.get(r.name)
            if d is None:
                continue
            cron, job_type, payload, per_business = d.cron, d.job_type, d.payload, True
            tz, catch_up, jitter = d.timezone, d.catch_up, d.jitter
        else:
            # a business's own schedule always stores both (the API and the CLI require them)
            assert r.cron is not None and r.job_type is not None, r.name
            cron, job_type, payload, per_business = r.cron, r.job_type, r.payload, r.per_business
            tz, catch_up, jitter = r.timezone, r.catch_up, r.jitter
        out.append(
            Effective(
                r.id,
                r.name,
                r.source,
                r.business_id,
                cron,
                job_type,
                payload,
                per_business,
                tz,
                catch_up,
                jitter,
                r.paused,
                _aware(r.fired_through),
                _aware(r.created_at),
            )  # fmt: skip
        )
    return sorted(out, key=lambda e: (e.business_id or 0, e.name))


def ensure_plugin_rows(rt: Runtime, session: Any) -> None:
    """A row for every installed plugin schedule (it holds the paused flag and progress)."""
    from sqlalchemy import select

    from prosaas_core.jobs.housekeeping import NAME
    from prosaas_core.models import ScheduleRow

    wanted = {("plugin", n) for n in rt.registry.schedules} | {("core", NAME)}
    have = {
        (source, name)
        for source, name in session.execute(
            select(ScheduleRow.source, ScheduleRow.name).where(
                ScheduleRow.source.in_(("plugin", "core")),
                ScheduleRow.name.in_({n for _, n in wanted}),
            )
        )
    }
    if wanted <= have:
        return
    for source, name in sorted(wanted - have):
        session.add(ScheduleRow(name=name, source=source, business_id=None))
    session.flush()


def load(rt: Runtime, *, business_id: int | None = None) -> list[Effective]:
    """Every schedule (a business's own only, with `business_id`)."""
    from sqlalchemy import select

    from prosaas_core.models import ScheduleRow

    with rt.session() as s:
        ensure_plugin_rows(rt, s)
        q = select(ScheduleRow)
        if business_id is not None:
            q = q.where(ScheduleRow.business_id == business_id)
        return effective(rt, list(s.scalars(q)))


def status(rt: Runtime, *, business_id: int | None = None) -> list[dict[str, Any]]:
    """Each schedule with its last occurrence, that occurrence's job status(es), the next
    occurrence and whether it is overdue (for `schedules list`, doctor, metrics, the API)."""
    from sqlalchemy import func, select

    from prosaas_core.jobs.store import utcnow
    from prosaas_core.models import BackgroundJob, ScheduleRun

    items = load(rt, business_id=business_id)
    now = utcnow()
    grace = rt.settings.schedule_grace
    out = []
    with rt.engine.connect() as conn:
        for e in items:
            last = _aware(
                conn.execute(
                    select(func.max(ScheduleRun.occurrence_at)).where(
                        ScheduleRun.schedule_id == e.id
                    )
                ).scalar()
            )
            statuses: dict[str, int] = {}
            if last is not None:
                for st, n in conn.execute(
                    select(BackgroundJob.status, func.count())
                    .select_from(ScheduleRun)
                    .join(BackgroundJob, BackgroundJob.id == ScheduleRun.job_id)
                    .where(ScheduleRun.schedule_id == e.id, ScheduleRun.occurrence_at == last)
                    .group_by(BackgroundJob.status)
                ):
                    statuses[st] = n
            problem = None
            installed = e.source == "core" or e.job_type in rt.registry.job_types
            if not installed:
                problem = f"job type {e.job_type!r} is not installed"
            elif not e.paused:
                # the latest occurrence a running scheduler would have dealt with by now
                due = previous_occurrence(e.cron, e.timezone, now - timedelta(seconds=grace))
                seen = e.fired_through or e.created_at
                if due > seen:
                    problem = f"occurrence {due.isoformat()} is overdue: is a worker running?"
            out.append(
                {
                    "id": e.id,
                    "name": e.name,
                    "source": e.source,
                    "business_id": e.business_id,
                    "cron": e.cron,
                    "timezone": e.timezone,
                    "job_type": e.job_type,
                    "per_business": e.per_business,
                    "catch_up": e.catch_up,
                    "paused": e.paused,
                    "last_occurrence": last.isoformat() if last else None,
                    "last_jobs": statuses,
                    "next_occurrence": None
                    if e.paused
                    else next_occurrence(e.cron, e.timezone, now).isoformat(),
                    "problem": problem,
                }
            )
    return out


def add(
    rt: Runtime,
    name: str,
    *,
    cron: str,
    job_type: str,
    payload: dict | None = None,
    business_id: int | None = None,
    per_business: bool = False,
    timezone: str = "UTC",
    catch_up: str = "skip",
    jitter: float = 0.0,
    source: str = "operator",
) -> dict[str, Any]:
    """Add an operator's (or, with source="business", a business's) schedule, validated."""
    from sqlalchemy.exc import IntegrityError

    from prosaas_core.jobs.enqueue import validate_payload
    from prosaas_core.models import Business, ScheduleRow
    from prosaas_core.registry import SCHEDULE_RE

    if not SCHEDULE_RE.match(name or ""):
        raise TimingError(f"invalid schedule name {name!r}: {SCHEDULE_RE.pattern}")
    check_definition(cron, timezone, catch_up, jitter)
    jt = rt.registry.job_type(job_type)  # UnknownJobTypeError
    data = validate_payload(jt, payload)  # PayloadError
    if per_business == (business_id is not None):
        raise TimingError("give a business or per_business, one of the two")
    with rt.session() as s:
        if business_id is not None and s.get(Business, business_id) is None:
            raise NotFoundError(f"business {business_id} not found")
        if business_id is None and name in rt.registry.schedules:
            raise ConflictError(f"schedule {name!r} exists (a plugin's)")
        row = ScheduleRow(
            name=name, source=source, business_id=business_id, cron=cron, job_type=jt.name,
            payload=data, per_business=per_business, timezone=timezone, catch_up=catch_up,
            jitter=float(jitter),
        )  # fmt: skip
        s.add(row)
        try:
            s.flush()
        except IntegrityError:
            raise ConflictError(f"schedule {name!r} exists") from None
        row_id = row.id
    return by_id(rt, row_id, business_id=business_id)


def by_id(rt: Runtime, schedule_id: int, *, business_id: int | None = None) -> dict[str, Any]:
    """One schedule's `status` entry; NotFoundError if missing or not `business_id`'s."""
    for item in status(rt, business_id=business_id):
        if item["id"] == schedule_id:
            return item
    raise NotFoundError(f"schedule {schedule_id} not found")


def _find(s: Any, name_or_id: str | int, business_id: int | None) -> ScheduleRow:
    from sqlalchemy import select

    from prosaas_core.models import ScheduleRow

    q = select(ScheduleRow)
    if isinstance(name_or_id, int):
        q = q.where(ScheduleRow.id == name_or_id)
    else:
        q = q.where(ScheduleRow.name == name_or_id)
    if business_id is not None:
        q = q.where(ScheduleRow.business_id == business_id)
    rows = list(s.scalars(q))
    if not rows:
        raise NotFoundError(f"schedule {name_or_id!r} not found")
    if len(rows) > 1:
        raise ConflictError(
            f"{len(rows)} schedules are named {name_or_id!r} (businesses' own): give its id"
        )
    return rows[0]


def set_paused(
    rt: Runtime, name_or_id: str | int, paused: bool, *, business_id: int | None = None
) -> None:
    """Pause or resume a schedule. Resuming skips what fell while paused (it starts afresh)."""
    from prosaas_core.jobs.store import utcnow

    with rt.session() as s:
        ensure_plugin_rows(rt, s)
        row = _find(s, name_or_id, business_id)
        if row.paused and not paused:
            row.fired_through = utcnow()
        row.paused = paused
        row.updated_at = utcnow()


def remove(rt: Runtime, name_or_id: str | int, *, business_id: int | None = None) -> None:
    """Remove an operator's or business's schedule (a plugin's can only be paused)."""
    with rt.session() as s:
        row = _find(s, name_or_id, business_id)
        if row.source in ("plugin", "core"):
            owner = "a plugin's" if row.source == "plugin" else "prosaas's own"
            raise ConflictError(f"schedule {row.name!r} is {owner}: pause it instead")
        s.delete(row)
