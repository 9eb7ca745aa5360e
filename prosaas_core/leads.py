"""Lead selection and batched, tenant-scoped lead operations (public: plugins may import this).

Every plugin that acts on a set of leads (bulk delete, bulk update, and later broadcasts and
outbound calls) takes the same selection and walks it the same way::

    from prosaas_core.leads import deleting, run_selection

    def handler(ctx):
        return run_selection(ctx, ctx.payload, deleting(), counted_as="deleted")

A selection is exactly one of:

- ``{"lead_ids": [1, 2, 3]}``: at most `MAX_LEAD_IDS` ids; an id that is not a lead of the job's
  business (missing, or another business's) is skipped and counted as ``not_found``;
- ``{"filter": {...}}`` with any of ``status`` (one or a list), ``source``, ``import_id``,
  ``created_before``, ``created_after``; an empty filter is an error;
- ``{"all": true}``: every lead of the business, said explicitly.

The rules every helper here keeps:

- **Tenant-scoped in SQL**: every statement carries ``business_id = :business_id``.
- **Keyset batches**: ``id > :last ORDER BY id LIMIT :n`` on the ``(business_id, id)`` index, so
  each batch costs the same however far the job has gone and memory stays flat. Batches are
  sized as the job runs to take about `TARGET_TXN_MS` each (``$PROSAAS_LEADS_BATCH_SIZE``
  fixes the size instead).
- **One short transaction per batch**: the batch's write and the job's checkpoint (with its
  progress) are one statement (``ctx.checkpoint_write``; on SQLite, one transaction): a worker
  killed at any instant leaves either the batch and its checkpoint, or neither, so a resumed
  job never counts or applies a batch twice. The write is fenced on the job's claim: a worker
  whose job was rescued and handed to another cannot commit another batch. The statement
  commits without waiting for the disk (``durable=False``): a database crash may lose the last
  batches with their checkpoints, which the attempt then finds (``CheckpointLost``) and the
  job redoes; `run_selection` settles before it returns its counts. On PostgreSQL a
  batch is two round trips in autocommit (the page, then that statement), where a hand-written
  loop in a transaction takes four (BEGIN, page, write, COMMIT). Both statements are built once
  per job with the batch as bound parameters (`LeadBatcher.where_template`, `Batch.params`),
  so a batch costs no statement construction or compilation in the worker.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, cast

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    String,
    and_,
    any_,
    bindparam,
    func,
    select,
    type_coerce,
    update,
)
from sqlalchemy import delete as sql_delete
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from prosaas_core.bounds import DbId, SafeDatetime
from prosaas_core.models import Lead, LeadImport
from prosaas_core.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy import CursorResult

__all__ = [
    "MAX_LEAD_IDS",
    "DEFAULT_BATCH_SIZE",
    "BATCH_SIZE_ENV",
    "LeadFilter",
    "LeadSelection",
    "Batch",
    "LeadBatcher",
    "batch_size",
    "fixed_batch_size",
    "next_batch_size",
    "TARGET_TXN_MS",
    "LeadWrite",
    "deleting",
    "updating",
    "run_selection",
    "import_exists",
]

#: Most lead ids one payload may list; larger sets are selected with a filter.
MAX_LEAD_IDS = 50_000
#: Leads in the first batch. Later batches are sized to take about `TARGET_TXN_MS` each
#: (`next_batch_size`), between `MIN_BATCH_SIZE` and `MAX_BATCH_SIZE`: measured with
#: bench/bulk_leads.py, a fixed size cannot serve both jobs, since a deleted lead (with its calls
#: detached) costs ~15-30 us and an updated one (six index entries) ~80 us on the same server.
DEFAULT_BATCH_SIZE = 500
MIN_BATCH_SIZE, MAX_BATCH_SIZE = 100, 10_000
#: What a batch's transaction should take: half the 100 ms any one may take, for headroom.
TARGET_TXN_MS = 50.0
#: Environment variable fixing the batch size (no adaptation) for every lead job of a worker.
BATCH_SIZE_ENV = "PROSAAS_LEADS_BATCH_SIZE"

_LEADS = Lead.__table__
#: most statuses one filter may list
MAX_STATUSES = 50
_Status = Annotated[str, StringConstraints(max_length=32)]

#: A write over a batch: given the batch's WHERE clause (always scoped to the business), the
#: DELETE or UPDATE statement on ``leads``. Build one with `deleting()` or `updating(values)`.
LeadWrite = Callable[[ColumnElement[bool]], Any]


def _given(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": [name], "properties": {name: schema}}


class LeadFilter(BaseModel):
    """Leads matching every given condition. At least one condition is required."""

    # the OpenAPI schema says "at least one condition" as the validator below does
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "anyOf": [
                _given("status", {"anyOf": [{"type": "string"}, {"type": "array", "minItems": 1}]}),
                _given("source", {"type": "string"}),
                _given("import_id", {"type": "integer"}),
                _given("created_before", {"type": "string"}),
                _given("created_after", {"type": "string"}),
            ]
        },
    )

    status: _Status | Annotated[list[_Status], Field(max_length=MAX_STATUSES)] | None = Field(
        default=None, description="one status or a list"
    )
    source: str | None = Field(default=None, max_length=64)
    import_id: DbId | None = None
    created_before: SafeDatetime | None = Field(default=None, description="created strictly before")
    created_after: SafeDatetime | None = Field(default=None, description="created at or after")

    @model_validator(mode="after")
    def _not_empty(self) -> LeadFilter:
        if all(getattr(self, name) in (None, []) for name in type(self).model_fields):
            raise ValueError(
                "empty filter: give at least one of status, source, import_id, created_before, "
                'created_after; to select every lead of the business send {"all": true}'
            )
        return self

    def describe(self) -> str:
        parts = [
            f"{name}={value}"
            for name, value in self.model_dump(mode="json", exclude_none=True).items()
        ]
        return " ".join(parts)


class LeadSelection(BaseModel):
    """Which leads of the job's business a bulk job acts on: exactly one of `lead_ids`,
    `filter` or ``all: true``."""

    # the OpenAPI schema says "exactly one of" as the validator below does
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                _given("lead_ids", {"type": "array"}),
                _given("filter", {"type": "object"}),
                _given("all", {"const": True}),
            ]
        },
    )

    lead_ids: list[DbId] | None = Field(
        default=None, min_length=1, max_length=MAX_LEAD_IDS, description="explicit lead ids"
    )
    filter: LeadFilter | None = None
    all: bool = Field(default=False, strict=True, description="every lead of the business")

    @model_validator(mode="after")
    def _exactly_one(self) -> LeadSelection:
        given = [
            name
            for name, on in (
                ("lead_ids", self.lead_ids is not None),
                ("filter", self.filter is not None),
                ("all", self.all),
            )
            if on
        ]
        if not given:
            raise ValueError('select leads with one of lead_ids, filter or {"all": true}')
        if len(given) > 1:
            raise ValueError(f"give only one of lead_ids, filter, all (got {', '.join(given)})")
        return self

    def describe(self) -> str:
        """A short human description, for log lines: ``50 leads``, ``all leads``, ..."""
        if self.lead_ids is not None:
            return f"{len(set(self.lead_ids))} leads"
        if self.filter is not None:
            return f"leads matching {self.filter.describe()}"
        return "all leads"

    def as_selection(self) -> LeadSelection:
        """Only the selection part (for subclasses that add fields such as ``set``)."""
        return LeadSelection(lead_ids=self.lead_ids, filter=self.filter, all=self.all)


def next_batch_size(size: int, txn_ms: float) -> int:
    """The size that should make the next transaction take about `TARGET_TXN_MS`, given that
    `size` leads took `txn_ms`: at most doubled or halved per step, within the bounds."""
    wanted = size * TARGET_TXN_MS / max(txn_ms, 1.0)
    wanted = min(max(wanted, size / 2), size * 2)
    return int(min(max(wanted, MIN_BATCH_SIZE), MAX_BATCH_SIZE))


def fixed_batch_size(settings: Settings) -> int | None:
    """``PROSAAS_LEADS_BATCH_SIZE`` (1..100000) from `settings` when set, else None (sizes
    adapt)."""
    if not settings.get(BATCH_SIZE_ENV):
        return None
    return settings.get_int(BATCH_SIZE_ENV, 0, minimum=1, maximum=100_000)


def batch_size(settings: Settings, default: int = DEFAULT_BATCH_SIZE) -> int:
    """The fixed batch size when ``PROSAAS_LEADS_BATCH_SIZE`` is set, else `default`."""
    return fixed_batch_size(settings) or default


def _created(op: str, value: datetime, dialect: str) -> ColumnElement[bool]:
    """``created_at <op> value``, `value` taken as UTC when it has no zone."""
    value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    column: Any = _LEADS.c.created_at
    bound: Any = value
    if dialect == "sqlite":
        # SQLite keeps text ("YYYY-MM-DD HH:MM:SS", as CURRENT_TIMESTAMP writes it): compare
        # text with text in that same shape, or equal instants would compare unequal
        column = type_coerce(column, String)
        bound = value.strftime("%Y-%m-%d %H:%M:%S") + (
            f".{value.microsecond:06d}" if value.microsecond else ""
        )
    cmp: ColumnElement[bool] = column < bound if op == "<" else column >= bound
    return cmp


def _filter_clauses(f: LeadFilter, dialect: str) -> list[ColumnElement[bool]]:
    c = _LEADS.c
    out: list[ColumnElement[bool]] = []
    if f.status not in (None, []):
        statuses = [f.status] if isinstance(f.status, str) else list(f.status)
        out.append(c.status == statuses[0] if len(statuses) == 1 else c.status.in_(statuses))
    if f.source is not None:
        out.append(c.source == f.source)
    if f.import_id is not None:
        out.append(c.import_id == f.import_id)
    if f.created_before is not None:
        out.append(_created("<", f.created_before, dialect))
    if f.created_after is not None:
        out.append(_created(">=", f.created_after, dialect))
    return out


def _ids_in(ids: list[int], dialect: str) -> ColumnElement[bool]:
    # PostgreSQL: one array parameter (= ANY) instead of a thousand-element IN list to parse.
    if dialect == "postgresql":
        return _LEADS.c.id == any_(bindparam("lead_ids", ids, type_=ARRAY(BigInteger)))
    return _LEADS.c.id.in_(ids)


@dataclass(frozen=True, eq=False)
class Batch:
    """One batch of a selection: explicit ids, or the id range ``(after, upto]``."""

    business_id: int
    #: how many selected positions this batch covers (ids listed, or rows seen in the range)
    size: int
    ids: list[int] | None = None
    after: int = 0
    upto: int = 0
    conditions: tuple[ColumnElement[bool], ...] = ()

    def where(self, dialect: str) -> ColumnElement[bool]:
        """The batch's WHERE clause; it always starts with the business."""
        clauses: list[ColumnElement[bool]] = [_LEADS.c.business_id == self.business_id]
        if self.ids is not None:
            clauses.append(_ids_in(self.ids, dialect))
        else:
            clauses += [_LEADS.c.id > self.after, _LEADS.c.id <= self.upto, *self.conditions]
        return and_(*clauses)

    def params(self) -> dict[str, Any]:
        """The values of `LeadBatcher.where_template`'s parameters for this batch."""
        if self.ids is not None:
            return {"batch_ids": self.ids}
        return {"batch_after": self.after, "batch_upto": self.upto}


class LeadBatcher:
    """Walks a selection in keyset batches; its `state` (a JSON dict) is what a job
    checkpoints, and a batcher built from a checkpointed state resumes where it stopped."""

    def __init__(
        self, business_id: int, selection: LeadSelection, state: dict[str, Any] | None, size: int
    ) -> None:
        self.business_id = business_id
        self.selection = selection
        self.size = size
        self.state: dict[str, Any] = dict(state or {})
        # explicit ids: sorted and de-duplicated, so a position in the list is a stable cursor
        self._ids = sorted(set(selection.lead_ids)) if selection.lead_ids is not None else None
        #: per dialect: the filter's clauses and the page statement, built once per batcher
        #: (each batch then only binds new values: no statement to build, key or compile)
        self._built: dict[str, tuple[tuple[ColumnElement[bool], ...], Any]] = {}

    @property
    def started(self) -> bool:
        return "total" in self.state

    @property
    def total(self) -> int:
        return int(self.state.get("total", 0))

    @property
    def done(self) -> int:
        return int(self.state.get("done", 0))

    def start(self, session: Session | Connection) -> None:
        """Fix the job's extent on its first attempt: the total, and for a filter the highest
        id that existed then (leads created during the job are not swept in). `session` may
        be a ``Connection``."""
        if self.started:
            return
        if self._ids is not None:
            self.state.update(total=len(self._ids), pos=0, done=0)
            return
        dialect = _dialect(session)
        scope = [_LEADS.c.business_id == self.business_id, *self._conditions(dialect)]
        total, upto = session.execute(
            select(func.count(), func.coalesce(func.max(_LEADS.c.id), 0)).where(*scope)
        ).one()
        self.state.update(total=int(total), upto=int(upto), last_id=0, done=0)

    def _conditions(self, dialect: str) -> list[ColumnElement[bool]]:
        f = self.selection.filter
        return _filter_clauses(f, dialect) if f is not None else []

    def _page(self, dialect: str) -> tuple[tuple[ColumnElement[bool], ...], Any]:
        """The filter's clauses and the page statement (its size and highest id, one round
        trip), with the cursor, the extent and the size as parameters; built once."""
        built = self._built.get(dialect)
        if built is None:
            conditions = tuple(self._conditions(dialect))
            page = (
                select(_LEADS.c.id)
                .where(
                    _LEADS.c.business_id == self.business_id,
                    _LEADS.c.id > bindparam("page_last", type_=BigInteger),
                    _LEADS.c.id <= bindparam("page_upto", type_=BigInteger),
                    *conditions,
                )
                .order_by(_LEADS.c.id)
                .limit(bindparam("page_size", type_=BigInteger))
                .subquery()
            )
            built = conditions, select(func.count(), func.max(page.c.id))
            self._built[dialect] = built
        return built

    def next_batch(self, session: Session | Connection) -> Batch | None:
        """The next batch, or None when the selection is exhausted (`session` may be a
        ``Connection``)."""
        if self._ids is not None:
            pos = int(self.state["pos"])
            chunk = self._ids[pos : pos + self.size]
            return Batch(self.business_id, len(chunk), ids=chunk) if chunk else None
        conditions, page = self._page(_dialect(session))
        last, upto = int(self.state["last_id"]), int(self.state["upto"])
        # one round trip, two scalars: the batch's size and its highest id (the next cursor)
        n, hi = session.execute(
            page, {"page_last": last, "page_upto": upto, "page_size": self.size}
        ).one()
        if not n:
            return None
        return Batch(self.business_id, int(n), after=last, upto=int(hi), conditions=conditions)

    def where_template(self, dialect: str) -> ColumnElement[bool]:
        """`Batch.where` of this batcher's batches with the batch as parameters (bind
        `Batch.params()`): a write built on it once serves every batch."""
        clauses: list[ColumnElement[bool]] = [_LEADS.c.business_id == self.business_id]
        if self._ids is not None:
            if dialect == "postgresql":
                ids = bindparam("batch_ids", type_=ARRAY(BigInteger))
                clauses.append(_LEADS.c.id == any_(ids))
            else:
                clauses.append(_LEADS.c.id.in_(bindparam("batch_ids", expanding=True)))
        else:
            clauses += [
                _LEADS.c.id > bindparam("batch_after", type_=BigInteger),
                _LEADS.c.id <= bindparam("batch_upto", type_=BigInteger),
                *self._page(dialect)[0],
            ]
        return and_(*clauses)

    def step(self, session: Session, write: LeadWrite) -> tuple[Batch | None, int]:
        """Take the next batch and apply `write` to it, in `session`'s transaction: the batch
        (None when the selection is exhausted) and how many leads the write touched.

        Two statements: the page (its size and highest id) and the write over the id range
        ``(last, highest]``, which PostgreSQL reads as one index range. (Measured: one fused
        statement, page + write in a CTE, was slower: with the page's highest id known only
        inside the statement, the planner reads the range on the primary key and filters out
        the other businesses' rows.) `run_selection` runs the same two, the write together with
        the checkpoint (``ctx.checkpoint_write``)."""
        batch = self.next_batch(session)
        if batch is None:
            return None, 0
        dialect = session.get_bind().dialect.name
        return batch, cast(
            "CursorResult[Any]", session.execute(write(batch.where(dialect)))
        ).rowcount

    def advance(self, batch: Batch, **counts: int) -> dict[str, Any]:
        """The state after `batch`, with `counts` added to the running totals."""
        state = dict(self.state)
        if batch.ids is not None:
            state["pos"] = int(state["pos"]) + batch.size
        else:
            state["last_id"] = batch.upto
        state["done"] = int(state["done"]) + batch.size
        for key, n in counts.items():
            state[key] = int(state.get(key, 0)) + n
        return state


def _dialect(handle: Session | Connection) -> str:
    return handle.dialect.name if isinstance(handle, Connection) else handle.get_bind().dialect.name


def deleting() -> LeadWrite:
    """Delete the batch's leads. Their calls keep their history with ``lead_id`` NULL (the
    foreign key is ON DELETE SET NULL)."""
    return lambda where: sql_delete(_LEADS).where(where)


def updating(values: dict[str, Any]) -> LeadWrite:
    """Set `values` (and ``updated_at``) on the batch's leads."""
    return lambda where: update(_LEADS).where(where).values(**values, updated_at=func.now())


def run_selection(
    ctx: Any,
    selection: LeadSelection,
    write: LeadWrite,
    *,
    counted_as: str,
    size: int | None = None,
) -> dict[str, Any]:
    """Apply `write` to `selection` for ``ctx.business_id``, batch by batch.

    Each batch's write, checkpoint and progress are one fenced statement
    (``ctx.checkpoint_write``), and ``ctx.should_stop()`` is checked before the next batch.
    Batches are sized to take about `TARGET_TXN_MS` each (`size`, or
    ``$PROSAAS_LEADS_BATCH_SIZE``, fixes the size instead). The batches commit without waiting
    for the disk; before it returns, the attempt settles them (``ctx.settle()``: one durable
    write), so the counts returned are of batches on disk, or ``CheckpointLost`` is raised.
    Returns the counts:
    ``{counted_as: n, "not_found": m, "total": t, "stopped": bool, "batches": b,
    "mean_batch_size": s, "max_txn_ms": longest}``; ``not_found`` counts listed
    ids that are not leads of the business (for a filter it stays 0).
    """
    fixed = size or fixed_batch_size(ctx.settings)
    batcher = LeadBatcher(ctx.business_id, selection, ctx.state, fixed or DEFAULT_BATCH_SIZE)
    longest = float(batcher.state.get("max_txn_ms", 0))
    if batcher.started:
        ctx.log.info(
            "Resuming from checkpoint: %d of %d done (tenant=%s, attempt %s)",
            batcher.done,
            batcher.total,
            ctx.business_id,
            ctx.attempt,
        )
        ctx.progress(batcher.done, batcher.total)
    else:
        # The extent, in autocommit; it is checkpointed with the first batch (the same fenced
        # statement): an attempt that dies before that has written nothing, and the next
        # attempt fixes the extent again.
        with ctx.connection() as conn:
            batcher.start(conn)
    #: the write, built once on the batch's parameters (`checkpoint_write` then compiles the
    #: fused statement once for the whole attempt, not once per batch)
    template = None
    written = stopped = False
    while True:
        if ctx.should_stop():
            stopped = True
            break
        began = time.perf_counter()
        # Per batch, two round trips on PostgreSQL (autocommit): the page, then the write and
        # its checkpoint (with the progress) as one fenced statement, so the batch and its
        # checkpoint commit together or not at all. On SQLite both run in one transaction.
        with ctx.connection() as conn:
            batch = batcher.next_batch(conn)
            if batch is None:
                break
            if template is None:
                template = write(batcher.where_template(conn.dialect.name))
            missing = batch.size if batch.ids is not None else 0
            state = batcher.advance(batch, **{counted_as: 0, "not_found": missing, "batches": 1})
            state["max_txn_ms"] = longest  # up to the previous batch: this one is not over
            add = {counted_as: 1, "not_found": -1} if batch.ids is not None else {counted_as: 1}
            ctx.checkpoint_write(
                conn,
                template,
                state,
                add=add,
                done=state["done"],
                total=batcher.total,
                params=batch.params(),
                # a batch lost with its checkpoint in a database crash is redone: no batch
                # waits for the disk (settled below, before the counts are returned)
                durable=False,
            )
        written = True
        txn_ms = (time.perf_counter() - began) * 1000  # the batch's round trips, commit included
        longest = max(longest, round(txn_ms, 1))
        if not fixed:
            batcher.size = next_batch_size(batch.size, txn_ms)
        batcher.state = ctx.state
    if not written:  # nothing selected, or stopped first: the outcome carries the progress
        ctx.progress(batcher.done, batcher.total)
    elif ctx.stopped_for != "shutdown":
        # the counts are only returned (and logged, and acted on) once every batch is on disk;
        # a job handed back at shutdown resumes from the row, whatever it kept
        ctx.settle()
    batches = int(batcher.state.get("batches", 0))
    return {
        counted_as: int(batcher.state.get(counted_as, 0)),
        "not_found": int(batcher.state.get("not_found", 0)),
        "total": batcher.total,
        "stopped": stopped,
        "batches": batches,
        "mean_batch_size": round(batcher.done / batches) if batches else 0,
        "max_txn_ms": longest,
    }


def import_exists(session: Session, business_id: int, import_id: int) -> bool:
    """Whether `import_id` is a lead import of `business_id` (another business's is not)."""
    row = session.execute(
        select(LeadImport.id).where(
            LeadImport.business_id == business_id, LeadImport.id == import_id
        )
    ).first()
    return row is not None
