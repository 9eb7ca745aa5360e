"""JSON error answers for everything: HTTP errors, prosaas errors and the unexpected.

Every error body is ``{"error": ..., "details": ...}``; never an HTML page or a traceback.
"""

from __future__ import annotations

import logging

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from prosaas_core.api.support import ApiError
from prosaas_core.errors import (
    ConflictError,
    MigrationRequiredError,
    NotFoundError,
    PayloadError,
    TimingError,
    UnknownJobTypeError,
    first_line,
    is_missing_schema,
)

log = logging.getLogger("prosaas.api")


def _json(status: int, error: str, details: object = None, headers: dict | None = None):
    resp = jsonify({"error": error, "details": details})
    resp.status_code = status
    for key, value in (headers or {}).items():
        resp.headers[key] = value
    return resp


def _http(exc: HTTPException):
    headers = {k: v for k, v in exc.get_headers() if k.lower() in {"allow", "retry-after"}}
    details: object = exc.description
    if isinstance(exc, RequestEntityTooLarge):
        from flask import current_app

        limit = current_app.config.get("MAX_CONTENT_LENGTH")
        details = f"the request body is over the limit of {limit} bytes (PROSAAS_MAX_BODY_BYTES)"
    elif exc.code == 405 and "Allow" in headers:
        details = {"allowed": [m.strip() for m in headers["Allow"].split(",")]}
    return _json(exc.code or 500, exc.name, details, headers)


def _payload_error(exc: PayloadError):
    from prosaas_core.bounds import truncate_errors

    details = exc.details
    if isinstance(details, list):
        details = truncate_errors(details)
    return _json(400, "Invalid payload", details)


def _unexpected(exc: Exception):
    from sqlalchemy.exc import DataError, OperationalError

    if isinstance(exc, RecursionError):  # a body nested past the parser's stack
        return _json(400, "Invalid JSON", "the JSON nests too deeply")
    if isinstance(exc, DataError):  # e.g. an id past BIGINT from a plugin's <int:...> route
        log.info("Rejected value on %s %s: %s", request.method, request.path, exc.orig)
        return _json(400, "Invalid value", "a value is out of range or malformed")

    if is_missing_schema(exc):
        log.error(
            "Database migration required on %s %s: %s; run `prosaas db upgrade`",
            request.method,
            request.path,
            first_line(exc),
        )
        return _json(503, "Database migration required", "Contact administrator")
    if isinstance(exc, OperationalError):
        log.error("Database unavailable on %s %s: %s", request.method, request.path, exc.orig)
        return _json(503, "Database unavailable", "the database could not be reached; retry later")
    if _is_redis_error(exc):  # e.g. a plugin's endpoint reading its slots while Redis is away
        log.error("Redis unavailable on %s %s: %s", request.method, request.path, first_line(exc))
        return _json(503, "Service unavailable", "a dependency could not be reached; retry later")
    log.exception("Unhandled error on %s %s", request.method, request.path)
    return _json(500, "Internal Server Error", "an unexpected error was logged on the server")


def _is_redis_error(exc: Exception) -> bool:
    """Redis away (refused, reset, timed out, loading, no master): not a bug to trace back."""
    from redis.exceptions import ConnectionError, TimeoutError

    return isinstance(exc, (ConnectionError, TimeoutError))


def install(app: Flask) -> None:
    """Register the JSON error handlers on `app`."""
    app.register_error_handler(ApiError, lambda e: e.response())
    app.register_error_handler(HTTPException, _http)
    app.register_error_handler(NotFoundError, lambda e: _json(404, "Not found", str(e)))
    app.register_error_handler(ConflictError, lambda e: _json(409, "Conflict", str(e)))
    app.register_error_handler(PayloadError, _payload_error)
    app.register_error_handler(TimingError, lambda e: _json(400, "Invalid time", str(e)))
    app.register_error_handler(
        UnknownJobTypeError, lambda e: _json(400, "Unknown job type", str(e))
    )
    app.register_error_handler(
        MigrationRequiredError,
        lambda e: _json(503, "Database migration required", "Contact administrator"),
    )
    app.register_error_handler(Exception, _unexpected)
