"""The ``update_leads`` handler and its payload: a selection plus the fields to set."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, TypeAdapter, ValidationError, WithJsonSchema, field_validator

from prosaas_core.bounds import Tags
from prosaas_core.leads import LeadSelection, run_selection, updating

#: The fields a bulk update may set, with the values each accepts.
ALLOWED: dict[str, TypeAdapter] = {
    "status": TypeAdapter(str),
    "owner": TypeAdapter(str | None),
    "tags": TypeAdapter(Tags | None),
    "notes": TypeAdapter(str | None),
}
LIMITS = {"status": 32, "owner": 200, "notes": 10_000}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


#: ``set`` as the validator below accepts it, for the OpenAPI document
SET_SCHEMA = {
    "type": "object",
    "minProperties": 1,
    "additionalProperties": False,
    "properties": {
        # a character Python's str.strip() keeps (it also strips \x1c-\x1f and \x85)
        "status": {
            "type": "string",
            "minLength": 1,
            "maxLength": 32,
            "pattern": "[^\\s\\x1c-\\x1f\\x85]|\\ufeff",
        },
        "owner": _nullable({"type": "string", "maxLength": 200}),
        "tags": _nullable(
            {"type": "array", "maxItems": 50, "items": {"type": "string", "maxLength": 64}}
        ),
        "notes": _nullable({"type": "string", "maxLength": 10_000}),
    },
    "description": "fields to set: any of status, owner, tags, notes",
}


class UpdateLeads(LeadSelection):
    """A lead selection and ``set``: the fields to write (status, owner, tags, notes).

    ``set`` is a plain object rather than a model so that a field left out stays untouched
    while one given as ``null`` (owner, tags, notes) is cleared.
    """

    set: Annotated[dict[str, Any], WithJsonSchema(SET_SCHEMA)] = Field(max_length=len(ALLOWED))

    @field_validator("set")
    @classmethod
    def _allowed_fields(cls, values: dict[str, Any]) -> dict[str, Any]:
        if not values:
            raise ValueError("nothing to set: give at least one of notes, owner, status, tags")
        out = {}
        for name, value in values.items():
            if name not in ALLOWED:
                raise ValueError(
                    f"field {name!r} cannot be set; allowed: {', '.join(sorted(ALLOWED))}"
                )
            try:
                value = ALLOWED[name].validate_python(value, strict=True)
            except ValidationError as exc:
                # the first reason only, never the value: it may be megabytes long
                first = exc.errors(include_url=False, include_input=False)[0]
                raise ValueError(f"field {name!r}: {first['msg']}") from None
            if name == "status" and not value.strip():
                raise ValueError("field 'status': must not be empty")
            if isinstance(value, str) and name in LIMITS and len(value) > LIMITS[name]:
                raise ValueError(f"field {name!r}: at most {LIMITS[name]} characters")
            out[name] = value
        return out


def update_leads(ctx) -> dict:
    """Write ``set`` on the selected leads of ``ctx.business_id``; counts updated and not found."""
    payload: UpdateLeads = ctx.payload
    values = dict(payload.set)
    ctx.log.info(
        "Updating %s: set %s (tenant=%s, attempt %s)",
        payload.describe(),
        ", ".join(sorted(values)),
        ctx.business_id,
        ctx.attempt,
    )
    counts = run_selection(ctx, payload.as_selection(), updating(values), counted_as="updated")
    if counts["stopped"]:
        ctx.log.info(
            "Bulk update stopped: %d of %d leads updated so far (tenant=%s)",
            counts["updated"],
            counts["total"],
            ctx.business_id,
        )
    else:
        ctx.log.info(
            "Updated %d leads successfully (not found: %d, tenant=%s)",
            counts["updated"],
            counts["not_found"],
            ctx.business_id,
        )
    return counts
