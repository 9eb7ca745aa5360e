"""The HTTP API, and the helpers plugin blueprints use (public: keep these names).

from prosaas_core.api import authenticated, current_business_id, parse_json, enqueue_job
"""

from __future__ import annotations

from prosaas_core.api.support import (
    ApiError,
    authenticated,
    current_business_id,
    current_runtime,
    enqueue_job,
    parse_json,
)

__all__ = [
    "ApiError",
    "authenticated",
    "current_business_id",
    "current_runtime",
    "enqueue_job",
    "parse_json",
]
