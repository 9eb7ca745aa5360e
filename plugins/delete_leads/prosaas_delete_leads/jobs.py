"""The handlers: batched, tenant-scoped, resumable deletes over `prosaas_core.leads`."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, PositiveInt

from prosaas_core.leads import LeadFilter, LeadSelection, deleting, run_selection


class DeleteLeads(LeadSelection):
    """Which leads to delete: ``lead_ids`` (at most 50,000), a ``filter``, or ``all: true``."""


class DeleteImportedLeads(BaseModel):
    """Every lead of one import of the business."""

    model_config = ConfigDict(extra="forbid")

    import_id: PositiveInt


def _finish(ctx, counts: dict) -> dict:
    if counts["stopped"]:
        ctx.log.info(
            "Bulk delete stopped: %d of %d leads deleted so far (tenant=%s)",
            counts["deleted"],
            counts["total"],
            ctx.business_id,
        )
    else:
        ctx.log.info(
            "Deleted %d leads successfully (not found: %d, tenant=%s)",
            counts["deleted"],
            counts["not_found"],
            ctx.business_id,
        )
    return counts


def delete_leads(ctx) -> dict:
    """Delete the selected leads of ``ctx.business_id``; counts deleted and not found."""
    selection: DeleteLeads = ctx.payload
    ctx.log.info(
        "Deleting %s (tenant=%s, attempt %s)", selection.describe(), ctx.business_id, ctx.attempt
    )
    counts = run_selection(ctx, selection.as_selection(), deleting(), counted_as="deleted")
    return _finish(ctx, counts)


def delete_imported_leads(ctx) -> dict:
    """Delete every lead of import ``import_id`` of ``ctx.business_id``."""
    import_id = ctx.payload.import_id
    ctx.log.info("Deleting leads of import %s (tenant=%s)", import_id, ctx.business_id)
    selection = LeadSelection(filter=LeadFilter(import_id=import_id))
    counts = run_selection(ctx, selection, deleting(), counted_as="deleted")
    return {"import_id": import_id, **_finish(ctx, counts)}
