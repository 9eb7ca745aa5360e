"""Bounds on what a request may carry, shared by the core and plugin request models.

Every list and string of a request model is capped, so validating any body up to
``PROSAAS_MAX_BODY_BYTES`` is quick and its 400 small: pydantic stops at a list's
``max_length`` before looking at its items, and at most `MAX_ERRORS` field errors are returned.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, StringConstraints

#: ids are PostgreSQL BIGINTs
MAX_ID = 2**63 - 1
#: field errors listed in a 400; the rest are counted in one last entry
MAX_ERRORS = 20
MAX_TAGS, MAX_TAG_LENGTH = 50, 64
#: most members one JSON object of a body may have: no model here has more than a few dozen
#: fields, and a model refusing extra keys would otherwise list an error for every one
MAX_OBJECT_MEMBERS = 1000

#: a database id: 1 .. BIGINT max (a larger number would fail in the database, not here)


def _json_integer(value: Any) -> Any:
    """An integer as JSON Schema means it (``5`` or ``5.0``), never ``"5"`` or ``true``."""
    if isinstance(value, bool | str | bytes):
        raise ValueError("Input should be a valid integer")
    return value


#: an integer in a JSON body, exactly as the OpenAPI document's ``"type": "integer"``
JsonInt = Annotated[int, BeforeValidator(_json_integer)]


def _json_number(value: Any) -> Any:
    if isinstance(value, bool | str | bytes):
        raise ValueError("Input should be a valid number")
    return value


#: a number in a JSON body (``"type": "number"``): never ``"1.5"`` or ``true``
JsonFloat = Annotated[float, BeforeValidator(_json_number)]
DbId = Annotated[int, Field(ge=1, le=MAX_ID), BeforeValidator(_json_integer)]
Tag = Annotated[str, StringConstraints(max_length=MAX_TAG_LENGTH)]
Tags = Annotated[list[Tag], Field(max_length=MAX_TAGS)]


def utc_representable(value: datetime) -> datetime:
    """A date the database and the job can use: with its zone it must still be a valid UTC
    instant (``9999-12-31T23:00:00-05:00`` is past year 9999 in UTC)."""
    try:
        (value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    except (OverflowError, ValueError, OSError):
        raise ValueError("date out of range") from None
    return value


def iso_string(value: Any) -> Any:
    """A date in JSON is an ISO 8601 string: pydantic would also take a number (a Unix time)."""
    if value is not None and not isinstance(value, str | datetime):
        raise ValueError("a date must be an ISO 8601 string")
    return value


#: a datetime that converts to UTC without overflow
SafeDatetime = Annotated[datetime, AfterValidator(utc_representable)]


def truncate_errors(errors: list[dict[str, Any]], limit: int = MAX_ERRORS) -> list[dict[str, Any]]:
    """The first `limit` errors, plus one entry counting the rest (when there are more)."""
    if len(errors) <= limit:
        return errors
    rest = len(errors) - limit
    return [
        *errors[:limit],
        {"loc": [], "msg": f"{rest} more error(s) not shown", "type": "too_many_errors"},
    ]


class BadJson(ValueError):
    """The body is JSON the API refuses: a NUL character, or an object with too many members."""


#: ``\u0000`` as an escape (an even run of backslashes before it would be literal text)
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads`` object hook: refuse an object past `MAX_OBJECT_MEMBERS` members."""
    if len(pairs) > MAX_OBJECT_MEMBERS:
        raise BadJson(f"an object has more than {MAX_OBJECT_MEMBERS} members")
    return dict(pairs)


def check_json(raw: bytes) -> None:
    """Refuse a JSON body carrying a NUL character (PostgreSQL text cannot hold one). A raw
    NUL byte is already invalid JSON inside a string, so only the escape is looked for: one
    regular-expression pass over the bytes, no walk of the parsed value."""
    if _NUL_ESCAPE.search(raw):
        raise BadJson("a string contains a NUL character (\\u0000)")
