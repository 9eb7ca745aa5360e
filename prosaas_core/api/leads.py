"""The leads API: one lead, a CSV import as one batch, and listing. Scoped to the token's
business: another business's lead or import answers 404 like a missing one."""

from __future__ import annotations

import io
from datetime import datetime
from typing import Any

from flask import Blueprint, jsonify, request, url_for
from sqlalchemy import select

from prosaas_core.api.openapi import describe
from prosaas_core.api.params import page, parse_query
from prosaas_core.api.schemas import (
    Error,
    LeadImportQueued,
    LeadImportResult,
    LeadImportSummary,
    LeadIn,
    LeadListQuery,
    LeadPage,
)
from prosaas_core.api.schemas import (
    Lead as LeadSchema,
)
from prosaas_core.api.support import (
    ApiError,
    authenticated,
    current_business_id,
    current_runtime,
    parse_json,
)
from prosaas_core.models import Lead, LeadImport

bp = Blueprint("prosaas_leads", __name__)

CSV_TYPES = {"text/csv", "application/csv"}
CSV_BODY = {
    "multipart/form-data": {
        "schema": {
            "type": "object",
            "properties": {"file": {"type": "string", "contentMediaType": "text/csv"}},
            "required": ["file"],
        }
    },
    "text/csv": {"schema": {"type": "string"}},
}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def lead_dict(lead: Lead) -> dict[str, Any]:
    return {
        "id": lead.id,
        "name": lead.name,
        "phone": lead.phone,
        "email": lead.email,
        "status": lead.status,
        "source": lead.source,
        "import_id": lead.import_id,
        "owner": lead.owner,
        "tags": lead.tags,
        "notes": lead.notes,
        "created_at": _iso(lead.created_at),
        "updated_at": _iso(lead.updated_at),
    }


def _region() -> str | None:
    from prosaas_core.lead_import import DEFAULT_REGION

    return current_runtime().settings.get("PROSAAS_PHONE_REGION", DEFAULT_REGION)


@bp.post("/api/leads")
@authenticated
@describe(
    body=LeadIn,
    responses={201: ("The lead, created (Location: the lead)", LeadSchema)},
    tags=["leads"],
)
def create_lead():
    """Create one lead; the phone is validated and stored in E.164."""
    from prosaas_core.lead_import import clean_lead

    body = parse_json(LeadIn)
    fields, errors = clean_lead(body.name, body.phone, body.email, _region())
    if errors:
        raise ApiError(400, "Invalid payload", [{"loc": [], "msg": e} for e in errors])
    with current_runtime().session() as s:
        lead = Lead(
            business_id=current_business_id(),
            status=body.status,
            source=body.source or "api",
            owner=body.owner,
            notes=body.notes,
            tags=body.tags,
            **fields,
        )
        s.add(lead)
        s.flush()
        s.refresh(lead)
        out = lead_dict(lead)
    resp = jsonify(out)
    resp.status_code = 201
    resp.headers["Location"] = url_for("prosaas_leads.get_lead", lead_id=out["id"])
    return resp


@bp.get("/api/leads")
@authenticated
@describe(query=LeadListQuery, responses={200: ("Leads, newest first", LeadPage)}, tags=["leads"])
def list_leads():
    """List the caller's leads, newest first, filtered by status or import batch.

    Paginate with ``before_id``: pass the previous page's ``next_before_id``.
    """
    q = parse_query(LeadListQuery)
    stmt = select(Lead).where(Lead.business_id == current_business_id())
    if q.status is not None:
        stmt = stmt.where(Lead.status == q.status)
    if q.import_id is not None:
        stmt = stmt.where(Lead.import_id == q.import_id)
    if q.before_id is not None:
        stmt = stmt.where(Lead.id < q.before_id)
    with current_runtime().session() as s:
        items = [lead_dict(r) for r in s.scalars(stmt.order_by(Lead.id.desc()).limit(q.limit))]
    return jsonify(page(items, q.limit))


@bp.get("/api/leads/<id:lead_id>")
@authenticated
@describe(responses={200: ("The lead", LeadSchema)}, tags=["leads"])
def get_lead(lead_id: int):
    """One lead of the caller's business."""
    with current_runtime().session() as s:
        lead = s.get(Lead, lead_id)
        if lead is None or lead.business_id != current_business_id():
            raise ApiError(404, "Not found", f"lead {lead_id} not found")
        return jsonify(lead_dict(lead))


class _Reader(io.RawIOBase):
    """Any object with ``read(n)`` as a raw binary stream, so TextIOWrapper can decode it
    chunk by chunk (WSGI input streams do not all implement the io interface)."""

    def __init__(self, source: Any) -> None:
        self._source = source

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        data = self._source.read(len(buf))
        buf[: len(data)] = data
        return len(data)


def _csv_source() -> tuple[Any, str | None]:
    """The uploaded CSV as a binary stream, and its file name."""
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("file")
        if upload is None:
            raise ApiError(400, "Missing file", "send the CSV in the multipart field 'file'")
        return upload.stream, upload.filename
    if request.mimetype in CSV_TYPES:
        return request.stream, request.args.get("filename")
    raise ApiError(
        415,
        "Unsupported Media Type",
        "send the CSV as multipart/form-data (field 'file') or with Content-Type: text/csv",
    )


@bp.post("/api/leads/import")
@authenticated
@describe(
    body=CSV_BODY,
    responses={
        201: ("The import batch: counts, and each bad row with its line number", LeadImportResult),
        202: (
            "More rows than PROSAAS_IMPORT_BACKGROUND_ROWS: staged and imported by an "
            "import_leads job (Location: the job; the batch shows its progress)",
            LeadImportQueued,
        ),
        413: ("The CSV has more rows than PROSAAS_IMPORT_MAX_ROWS: nothing imported", Error),
    },
    tags=["leads"],
)
def import_leads():
    """Import leads from a CSV with columns name, phone, email, as one batch.

    Bad rows are reported with their line numbers and skipped; the good rows are kept. A CSV
    of at most ``PROSAAS_IMPORT_BACKGROUND_ROWS`` rows is imported in the request (201); a
    larger one is stored and imported by an ``import_leads`` job, with progress and cancel
    (202: follow the job, or the batch at ``/api/leads/imports/{id}``).
    """
    from prosaas_core.import_job import JOB_TYPE, Staged, receive, start
    from prosaas_core.lead_import import (
        ImportFormatError,
        ImportTooLarge,
        background_rows,
        max_rows,
    )

    rt = current_runtime()
    source, filename = _csv_source()
    text = io.TextIOWrapper(
        io.BufferedReader(_Reader(source), 64 * 1024), encoding="utf-8-sig", newline=""
    )
    limit = max_rows(rt.settings)
    # without the core's plugin (PROSAAS_DISABLE_PLUGINS=core) every import runs here
    threshold = background_rows(rt.settings) if JOB_TYPE in rt.registry.job_types else limit
    try:
        with rt.session() as s:
            result = receive(
                s,
                current_business_id(),
                text,
                filename=filename,
                region=_region(),
                threshold=threshold,
                row_limit=limit,
            )
    except ImportTooLarge as exc:
        raise ApiError(413, "Too many rows", str(exc)) from None
    except ImportFormatError as exc:
        raise ApiError(400, "Invalid CSV", str(exc)) from None
    except UnicodeDecodeError as exc:
        raise ApiError(400, "Invalid CSV", f"the file is not UTF-8 text ({exc.reason})") from None
    if isinstance(result, Staged):
        job = start(rt, current_business_id(), result)
        resp = jsonify(
            {
                "id": job.id,
                "status": job.status,
                "job_type": job.job_type,
                "import_id": result.import_id,
                "total_rows": result.total_rows,
            }
        )
        resp.status_code = 202
        resp.headers["Location"] = url_for("prosaas_core.get_job", job_id=job.id)
        return resp
    resp = jsonify(result.as_dict())
    resp.status_code = 201
    resp.headers["Location"] = url_for("prosaas_leads.get_import", import_id=result.import_id)
    return resp


@bp.get("/api/leads/imports/<id:import_id>")
@authenticated
@describe(responses={200: ("The import batch", LeadImportSummary), 404: ("Not found", Error)})
def get_import(import_id: int):
    """One CSV import batch of the caller's business, with its counts and bad rows."""
    with current_runtime().session() as s:
        row = s.get(LeadImport, import_id)
        if row is None or row.business_id != current_business_id():
            raise ApiError(404, "Not found", f"lead import {import_id} not found")
        return jsonify(
            {
                "id": row.id,
                "filename": row.filename,
                "status": row.status,
                "total_rows": row.total_rows,
                "imported_rows": row.imported_rows,
                "failed_rows": row.failed_rows,
                "errors": row.errors,
                "created_at": _iso(row.created_at),
                "job_id": row.job_id,
            }
        )
