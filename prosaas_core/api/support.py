"""Request helpers shared by the core blueprint and plugin blueprints."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, overload

from flask import current_app, g, jsonify, request

from prosaas_core.runtime import Runtime
from prosaas_core.tokens import lookup_token

if TYPE_CHECKING:
    from flask import Response
    from pydantic import BaseModel

M = TypeVar("M", bound="BaseModel")


class ApiError(Exception):
    """An error answered as JSON ``{"error": ..., "details": ...}`` with `status`."""

    def __init__(self, status: int, error: str, details: Any = None) -> None:
        super().__init__(error)
        self.status, self.error, self.details = status, error, details

    def response(self) -> Response:
        resp = jsonify({"error": self.error, "details": self.details})
        resp.status_code = self.status
        return resp


def current_runtime() -> Runtime:
    """The runtime of the app serving this request."""
    rt: Runtime = current_app.extensions["prosaas"]
    return rt


def current_business_id() -> int:
    """The business the request's bearer token belongs to (inside an `authenticated` view)."""
    business_id: int = g.business_id
    return business_id


def _bearer() -> str:
    """The request's bearer token; 401 when there is none."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "Unauthorized", "send Authorization: Bearer <token>")
    return token.strip()


def unknown_token() -> ApiError:
    """The 401 of a bearer token that is unknown or revoked."""
    return ApiError(401, "Unauthorized", "unknown or revoked token")


def authenticated(view: Callable[..., Any]) -> Callable[..., Any]:
    """Require ``Authorization: Bearer <token>``; 401 when missing, unknown or revoked."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        business_id = _resolve(_bearer())
        if business_id is None:
            raise unknown_token()
        g.business_id = business_id
        return view(*args, **kwargs)

    # read by the OpenAPI builder: this route needs a bearer token
    wrapper.prosaas_authenticated = True  # type: ignore[attr-defined]
    return wrapper


def authenticated_in_statement(view: Callable[..., Any]) -> Callable[..., Any]:
    """`authenticated` for a view whose one write checks the token itself (``POST /api/jobs``:
    the job's INSERT selects the token's business), saving the lookup's round trip. The view
    reads the token from ``g.bearer_token``, sets ``g.business_id`` once the write found it,
    and raises `unknown_token` when the write found no live token. Anything else the view
    raises first (a bad body, a refused row) is answered 401 instead when the token is not
    live, as `authenticated` would have: the answers are the same, only cheaper."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        g.bearer_token = _bearer()
        try:
            return view(*args, **kwargs)
        except ApiError as exc:
            if exc.status == 401 or "business_id" in g:
                raise
            _require_live()
            raise
        except Exception:
            if "business_id" not in g:
                _require_live()
            raise

    wrapper.prosaas_authenticated = True  # type: ignore[attr-defined]
    return wrapper


def _require_live() -> None:
    business_id = _resolve(g.bearer_token)
    if business_id is None:
        raise unknown_token() from None
    g.business_id = business_id


def _resolve(token: str) -> int | None:
    """The token's business: one indexed SELECT on an autocommit connection, without the
    BEGIN/COMMIT round trips of a transaction (this runs on every request). Nothing is
    cached, so a revoked token fails on the very next request."""
    return lookup_token(current_runtime().engine, token)


@overload
def parse_json(model: type[M]) -> M: ...
@overload
def parse_json(model: None = None) -> Any: ...
def parse_json(model: type[BaseModel] | None = None) -> Any:
    """The request's JSON body, validated against a pydantic `model` when given.

    415 for a non-JSON content type, 400 for malformed JSON or a payload that fails validation
    (pydantic's field errors in ``details``).
    """
    if not request.is_json:
        raise ApiError(415, "Unsupported Media Type", "send Content-Type: application/json")
    data = _json_body()
    if model is None:
        return data
    from pydantic import ValidationError

    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(400, "Invalid payload", _field_errors(exc)) from None


def _json_body() -> Any:
    """The body parsed as JSON; 400 for malformed JSON, nesting deeper than the parser's
    recursion limit (about 1,000 levels: RecursionError) or a NUL character."""
    import json

    from prosaas_core.bounds import BadJson, check_json, object_pairs

    try:
        data = json.loads(request.get_data(cache=True), object_pairs_hook=object_pairs)
    except RecursionError:
        raise ApiError(400, "Invalid JSON", "the JSON nests too deeply") from None
    except BadJson as exc:
        raise ApiError(400, "Invalid JSON", str(exc)) from None
    except ValueError:
        raise ApiError(400, "Invalid JSON", "the request body is not valid JSON") from None
    try:
        check_json(request.get_data(cache=True))
    except BadJson as exc:
        raise ApiError(400, "Invalid JSON", str(exc)) from None
    return data


def _field_errors(exc: Any) -> list[dict[str, Any]]:
    """Pydantic's errors as ``{loc, msg, type}``: the first `MAX_ERRORS`, then a count."""
    from prosaas_core.bounds import MAX_ERRORS, truncate_errors

    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    return truncate_errors(
        [{"loc": list(e["loc"]), "msg": e["msg"][:500], "type": e["type"]} for e in errors],
        MAX_ERRORS,
    )


def enqueue_job(job_type: str, payload: Any, *, run_at: Any = None, delay: Any = None) -> Any:
    """Enqueue a job for the current business and answer as the jobs API does:
    202 ``{id, status, job_type}`` with a Location, or 409 with the active job's id for a
    unique type; 400 for a bad payload or time, 503 when the database needs a migration.
    `run_at` (a datetime) or `delay` (seconds) make the job due later."""
    from prosaas_core.jobs.enqueue import enqueue

    # PayloadError, TimingError, UnknownJobTypeError and MigrationRequiredError are answered
    # by the app's error handlers (api/errors.py), the same for every endpoint.
    res = enqueue(
        current_runtime(), job_type, current_business_id(), payload, run_at=run_at, delay=delay
    )
    return enqueued_response(res)


def enqueued_response(res: Any) -> Any:
    """The jobs API's answer for an `Enqueued`: 202 with a Location, or 409 with the id of the
    active job of a unique type."""
    body = {"id": res.id, "status": res.status, "job_type": res.job_type}
    if not res.created:
        raise ApiError(409, "Job already active", body)
    resp = jsonify(body)
    resp.status_code = 202
    # the path of `get_job`, written out: url_for costs this hot path more than the rest of it
    resp.headers["Location"] = f"{request.script_root}/api/jobs/{res.id}"
    return resp
