"""URL and query-string parsing shared by the core endpoints."""

from __future__ import annotations

from typing import Any, TypeVar

from flask import request
from pydantic import BaseModel, ValidationError
from werkzeug.routing import IntegerConverter

from prosaas_core.api.support import ApiError, _field_errors
from prosaas_core.bounds import MAX_ID  # ids are BIGINTs: a larger one in a URL is not found

M = TypeVar("M", bound=BaseModel)


class IdConverter(IntegerConverter):
    """``<id:job_id>``: a positive 64-bit integer; anything else does not match (404)."""

    def __init__(self, map: Any) -> None:  # noqa: A002 - werkzeug's signature
        super().__init__(map, min=1, max=MAX_ID)


def parse_query(model: type[M]) -> M:
    """The query string validated against `model`; 400 with pydantic's field errors."""
    try:
        return model.model_validate(request.args.to_dict())
    except ValidationError as exc:
        raise ApiError(400, "Invalid query parameters", _field_errors(exc)) from None


def page(items: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    """A page of newest-first items and the cursor for the next one (None on the last)."""
    next_before = items[-1]["id"] if len(items) == limit and items else None
    return {"items": items, "next_before_id": next_before}
