"""Message templates: ``{field}`` placeholders filled from the lead.

Fields are the lead's columns (`FIELDS`). ``{{`` and ``}}`` are literal braces. A placeholder
that is not a field, or a format spec/conversion (``{name!r}``, ``{name:>5}``), is refused when
the broadcast is created, naming it, so no message is ever sent half-rendered.
"""

from __future__ import annotations

import string
from typing import Any

#: the lead columns a template may use (the core's leads have no free-form custom fields: tags
#: is a list, rendered comma-separated)
FIELDS = (
    "id",
    "name",
    "phone",
    "email",
    "status",
    "source",
    "owner",
    "notes",
    "tags",
    "import_id",
    "created_at",
)
MAX_TEMPLATE = 1600  # Twilio's limit for one message body


class TemplateError(ValueError):
    """The template cannot be used; ``unknown`` lists the placeholders that are not fields."""

    def __init__(self, message: str, unknown: list[str] | None = None) -> None:
        super().__init__(message)
        self.unknown = unknown or []


def placeholders(template: str) -> list[str]:
    """The field names `template` uses, in order; TemplateError when it cannot be parsed or
    names something that is not a lead field."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise TemplateError(f"invalid template: {exc}") from None
    names: list[str] = []
    unknown: list[str] = []
    for _, field, spec, conversion in parts:
        if field is None:
            continue
        if spec or conversion:
            raise TemplateError(
                f"placeholder {{{field}}}: format specs and conversions are not allowed"
            )
        if field not in FIELDS:
            unknown.append(field)
        elif field not in names:
            names.append(field)
    if unknown:
        raise TemplateError(
            f"unknown placeholders: {', '.join('{' + u + '}' for u in unknown)}; "
            f"use any of {', '.join(FIELDS)}",
            unknown,
        )
    return names


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def render(template: str, lead: dict[str, Any]) -> str:
    """`template` with each placeholder replaced by the lead's value (empty when NULL)."""
    return template.format_map({f: _text(lead.get(f)) for f in FIELDS})
