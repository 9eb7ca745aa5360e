"""Large CSV imports: staged in PostgreSQL by the request, imported by an ``import_leads`` job.

The request reads the CSV once. Up to ``PROSAAS_IMPORT_BACKGROUND_ROWS`` rows it is imported
there and then, as it always was (201). Past that, the rows are not cleaned in the request: the
file is cut into chunks of whole records (`LeadImportChunk`, as uploaded, in the database, never
in Redis, which keeps nothing on disk), counted against ``PROSAAS_IMPORT_MAX_ROWS`` (413 above
it, nothing kept), and an ``import_leads`` job is enqueued (202).

The job imports one chunk per transaction: the chunk's leads are inserted, the chunk is deleted,
the batch's counts are updated and the job's checkpoint is written, all in that one transaction
(fenced: a stale attempt's transaction is refused and rolls back whole). So an attempt killed at
any instant resumes at the first chunk left, and no row is imported twice or lost. Cancelling
stops it between chunks. The chunks still there when the job ends (cancelled, failed) are
deleted by the job itself or, when it never ran, by the ``lead-imports-cleanup`` service every
worker runs.
"""

from __future__ import annotations

import csv
import io
import logging
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import chain
from typing import TYPE_CHECKING, Any, TextIO, cast
from uuid import uuid4

from pydantic import BaseModel, ConfigDict
from sqlalchemy import delete, select, update

from prosaas_core.bounds import DbId
from prosaas_core.lead_import import (
    MAX_REPORTED_ERRORS,
    ImportFormatError,
    ImportResult,
    clean_filename,
    finish_batch,
    header,
    import_rows,
    rows_of,
    too_large,
)
from prosaas_core.models import FINAL_STATUSES, BackgroundJob, LeadImport, LeadImportChunk

if TYPE_CHECKING:
    from sqlalchemy import CursorResult
    from sqlalchemy.orm import Session

    from prosaas_core.runtime import Runtime

log = logging.getLogger("prosaas.imports")

JOB_TYPE = "import_leads"
#: characters per staged chunk (whole records: a little more): one chunk is one transaction of
#: the job (~1,000 to 2,000 rows, ~100 ms of phone parsing on a quiet machine), and the unit a
#: killed attempt redoes
CHUNK_CHARS = 32 * 1024
#: a staged import whose job was never enqueued (the API died in between) is dropped after this
ORPHAN_AFTER = timedelta(hours=1)


class ImportLeads(BaseModel):
    """A staged CSV import of the business (``POST /api/leads/import`` enqueues it)."""

    model_config = ConfigDict(extra="forbid")

    import_id: DbId


@dataclass(frozen=True)
class Staged:
    """A large import, staged: its batch and how many rows its job will import."""

    import_id: int
    total_rows: int


def _pack(text: str) -> bytes:
    # zlib's fastest level: a few times smaller for a CSV, so cheaper to write and read back
    return zlib.compress(text.encode(), 1)


def _captured(stream: TextIO, lines: list[str]) -> Iterator[str]:
    """`stream`'s lines, each also appended to `lines`: the raw text of what csv read."""
    for line in stream:
        lines.append(line)
        yield line


def _records(block: str, token: str) -> tuple[int, int, bool]:
    """(non-empty records, physical lines, whether it ends between records) of `block`.

    csv reads the block followed by a line holding only `token`: the last record is exactly
    ``[token]`` unless the block ends inside a quoted field (then the token is swallowed into
    that field). Counting this way costs about what csv's own parse does, with no Python work
    per line beyond the count."""
    reader = csv.reader(chain(io.StringIO(block, newline=""), (token + "\n",)))
    n = 0
    last: list[str] | None = None
    try:
        for last in reader:
            if last:
                n += 1
    except csv.Error as exc:
        raise ImportFormatError(f"near line {reader.line_num}: malformed CSV ({exc})") from None
    closed = last == [token]
    return n - closed, reader.line_num - 1, closed


def _excess_line(block: str, first_line: int, allowed: int) -> int:
    """The line of the first row past the `allowed` rows `block` may still hold."""
    for k, (line, _row) in enumerate(rows_of(csv.reader(io.StringIO(block, newline=""))), 1):
        if k > allowed:
            return first_line - 1 + line
    return first_line


def receive(
    session: Session,
    business_id: int,
    stream: TextIO,
    *,
    filename: str | None,
    region: str | None,
    threshold: int,
    row_limit: int,
) -> ImportResult | Staged:
    """Read the CSV from `stream` in the caller's transaction: imported (an `ImportResult`)
    when it has at most `threshold` rows, else staged for a job (`Staged`). Raises
    `ImportFormatError` (`ImportTooLarge` past `row_limit` rows); roll back then."""
    raw: list[str] = []
    reader = csv.reader(_captured(stream, raw))
    cols = header(reader)
    raw.clear()
    first_line = reader.line_num + 1
    head: list[tuple[int, list[str]]] = []
    for line, row in rows_of(reader):
        head.append((line, row))
        if len(head) > row_limit:
            raise too_large(line, row_limit)
        if len(head) > threshold:
            break
    else:
        batch = LeadImport(business_id=business_id, filename=clean_filename(filename))
        session.add(batch)
        session.flush()
        result = ImportResult(import_id=batch.id)
        import_rows(session, business_id, batch.id, head, cols, result, region=region)
        finish_batch(batch, result)
        session.flush()
        return result
    # A large file: the rows read so far and the rest are stored as they came, in blocks cut
    # between records, and only counted here; the job cleans and inserts them.
    batch = LeadImport(
        business_id=business_id,
        filename=clean_filename(filename),
        status="queued",
        columns=cols,
    )
    session.add(batch)
    session.flush()
    count = len(head)
    pending = [(first_line, count, "".join(raw))]
    first_line += len(raw)
    token = f"prosaas-end-of-block-{uuid4().hex}"

    def flush() -> None:
        if pending:
            session.execute(
                LeadImportChunk.__table__.insert(),
                [
                    {"import_id": batch.id, "first_line": f, "rows": n, "data": _pack(t)}
                    for f, n, t in pending
                ],
            )
            pending.clear()

    while block := stream.read(CHUNK_CHARS):
        block += stream.readline()
        while True:
            n, lines, closed = _records(block, token)
            more = "" if closed else stream.read(CHUNK_CHARS)
            if not more:  # between records, or the file ends inside a quoted field
                break
            block += more + stream.readline()
        if count + n > row_limit:
            raise too_large(_excess_line(block, first_line, row_limit - count), row_limit)
        count += n
        pending.append((first_line, n, block))
        first_line += lines
        if len(pending) >= 32:  # one INSERT per ~1 MiB
            flush()
    flush()
    batch.total_rows = count
    session.flush()
    return Staged(batch.id, count)


def start(rt: Runtime, business_id: int, staged: Staged) -> Any:
    """Enqueue the staged import's job (after the staging committed) and link it to the batch.
    If the enqueue fails, the staged rows are dropped and the error raised."""
    from prosaas_core.jobs.enqueue import enqueue

    try:
        res = enqueue(rt, JOB_TYPE, business_id, {"import_id": staged.import_id})
    except BaseException:
        with rt.session() as s:
            _drop(s, staged.import_id, "failed")
        raise
    with rt.session() as s:
        s.execute(
            update(LeadImport)
            .where(LeadImport.id == staged.import_id, LeadImport.job_id.is_(None))
            .values(job_id=res.id)
        )
    log.info(
        "Large import staged import_id=%s rows=%s business_id=%s job_id=%s",
        staged.import_id,
        staged.total_rows,
        business_id,
        res.id,
    )
    return res


def _drop(session: Session, import_id: int, status: str) -> int:
    """Delete what is left of an import's staged CSV and mark the batch `status`."""
    deleted = cast(
        "CursorResult[Any]",
        session.execute(delete(LeadImportChunk).where(LeadImportChunk.import_id == import_id)),
    )
    n = deleted.rowcount
    session.execute(
        update(LeadImport)
        .where(LeadImport.id == import_id, LeadImport.status.in_(("queued", "running")))
        .values(status=status)
    )
    return n or 0


def _counts(batch: LeadImport) -> dict[str, Any]:
    return {
        "import_id": batch.id,
        "total_rows": batch.total_rows,
        "imported": batch.imported_rows,
        "failed": batch.failed_rows,
    }


def import_leads(ctx: Any) -> dict[str, Any]:
    """The ``import_leads`` handler: import the staged chunks of ``import_id``, one per
    transaction, oldest first; stop between chunks when asked to."""
    import_id = ctx.payload.import_id
    region = ctx.settings.get("PROSAAS_PHONE_REGION", "US")
    with ctx.session() as s:
        batch = s.get(LeadImport, import_id)
        if batch is None or batch.business_id != ctx.business_id:
            raise LookupError(f"lead import {import_id} not found")
        if batch.status not in ("queued", "running"):
            # cancelled or failed before: its staged rows are gone; upload the file again
            return {**_counts(batch), "status": batch.status}
        # the batch is its job's (the job may start before the request links it): another
        # job enqueued for it by hand must not import it alongside
        if batch.job_id is None:
            batch.job_id = ctx.job_id
        elif batch.job_id != ctx.job_id:
            raise LookupError(f"lead import {import_id} is imported by job {batch.job_id}")
        batch.status = "running"
        total = batch.total_rows
        done = batch.imported_rows + batch.failed_rows
    if ctx.state:
        ctx.log.info("Import resumes: %d of %d rows done (attempt %s)", done, total, ctx.attempt)
    ctx.progress(done, total)
    while not ctx.should_stop():
        with ctx.session() as s:
            chunk = s.scalars(
                select(LeadImportChunk)
                .where(LeadImportChunk.import_id == import_id)
                .order_by(LeadImportChunk.id)
                .limit(1)
                .with_for_update()
            ).first()
            if chunk is None:
                break
            batch = s.get(LeadImport, import_id)
            result = ImportResult(import_id=import_id, errors=list(batch.errors or []))
            reader = csv.reader(io.StringIO(zlib.decompress(chunk.data).decode(), newline=""))
            rows = ((chunk.first_line - 1 + line, row) for line, row in rows_of(reader))
            import_rows(s, ctx.business_id, import_id, rows, batch.columns, result, region=region)
            batch.imported_rows += result.imported
            batch.failed_rows += result.failed
            batch.errors = result.errors[:MAX_REPORTED_ERRORS]
            s.delete(chunk)
            done = batch.imported_rows + batch.failed_rows
            # in this transaction: the chunk's leads, its deletion and the checkpoint commit
            # together, or (a stale attempt: refused) not at all
            ctx.checkpoint({"done": done}, session=s)
        ctx.progress(done, total)
    with ctx.session() as s:
        batch = s.get(LeadImport, import_id)
        if ctx.stopped_for == "cancel":
            dropped = _drop(s, import_id, "cancelled")
            ctx.log.info("Import cancelled: %d of %d rows done, staged rest dropped", done, total)
            return {**_counts(batch), "status": "cancelled", "dropped_chunks": dropped}
        if ctx.stopped_for is None and not ctx.lost:
            batch.status = "completed"
            # rows cut short of a chunk (blank lines) leave total above done: report the truth
            batch.total_rows = batch.imported_rows + batch.failed_rows
        out = {**_counts(batch), "status": batch.status}
    ctx.progress(out["imported"] + out["failed"], out["total_rows"])
    return out


def _aware(value: datetime) -> datetime:
    """SQLite gives naive UTC datetimes back; PostgreSQL aware ones."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def cleanup(session: Session) -> int:
    """Delete the staged chunks of imports whose job ended (or was never enqueued); mark those
    batches cancelled or failed as their job. Returns the number of batches cleaned."""
    from prosaas_core.jobs.store import utcnow

    J = BackgroundJob
    pending = session.execute(
        select(LeadImport.id, LeadImport.job_id, LeadImport.created_at, J.status)
        .outerjoin(J, J.id == LeadImport.job_id)
        .where(LeadImport.status.in_(("queued", "running")))
    ).all()
    cutoff = utcnow() - ORPHAN_AFTER
    cleaned = 0
    for import_id, job_id, created_at, job_status in pending:
        if job_status in FINAL_STATUSES:
            status = "cancelled" if job_status == "cancelled" else "failed"
        elif job_status is None and (job_id is not None or _aware(created_at) < cutoff):
            status = "failed"  # its job row is gone, or it never got one
        else:
            continue
        if job_status == "succeeded":
            status = "completed"
        _drop(session, import_id, status)
        log.info("Staged import %s cleaned up (job %s %s)", import_id, job_id, job_status)
        cleaned += 1
    return cleaned


def cleanup_service(ctx: Any) -> None:
    """The ``lead-imports-cleanup`` service: `cleanup` every ``PROSAAS_SWEEP_INTERVAL``."""
    while not ctx.stop_event.is_set():
        with ctx.session() as s:
            cleanup(s)
        ctx.stop_event.wait(ctx.settings.sweep_interval)
