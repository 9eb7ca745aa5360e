"""The OpenAPI 3.1 document, built from the app's url_map so plugin routes appear too.

Every rule becomes an operation: path parameters from its converters, the summary from the
view's docstring, bearer auth where the view is ``@authenticated``. Core views add request and
response schemas with ``@describe``. Job payload schemas come from each job type's pydantic
model (``model_json_schema``), so ``POST /api/jobs`` documents every installed type.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from werkzeug.routing.converters import (
    FloatConverter,
    IntegerConverter,
    NumberConverter,
    PathConverter,
    UUIDConverter,
)

REF = "#/components/schemas/{model}"
_PARAM_RE = re.compile(r"<(?:(?P<conv>[a-zA-Z_]\w*)(?:\((?P<args>[^)]*)\))?:)?(?P<name>\w+)>")
_SKIP_METHODS = {"HEAD", "OPTIONS"}
ERROR_STATUSES = {
    400: "Invalid request",
    401: "Missing, unknown or revoked token",
    404: "Not found (or another business's object)",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request body too large",
    415: "Unsupported content type",
    503: "Database migration required, or a dependency is down",
}


def describe(
    *,
    body: type[BaseModel] | dict[str, Any] | None = None,
    query: type[BaseModel] | None = None,
    responses: Mapping[int, tuple[str, type[BaseModel] | dict[str, Any] | None]] | None = None,
    tags: list[str] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Attach OpenAPI details to a view. `body` is a model or a mapping of content type to a
    schema; `responses` maps a status to (description, model or schema or None)."""

    def deco(view: Callable[..., Any]) -> Callable[..., Any]:
        view.prosaas_openapi = {  # type: ignore[attr-defined]
            "body": body,
            "query": query,
            "responses": responses or {},
            "tags": tags or [],
        }
        return view

    return deco


class _Schemas:
    """Collects model schemas into ``components.schemas``. Used twice: a first pass records
    every model, then `finalize` asks pydantic for names (it disambiguates equal class names
    from different plugins) and the second pass gets the real refs."""

    def __init__(self) -> None:
        self.models: list[type[BaseModel]] = []
        self.refs: dict[type[BaseModel], dict[str, Any]] | None = None
        self.defs: dict[str, Any] = {}

    def ref(self, model: type[BaseModel]) -> dict[str, Any]:
        if self.refs is not None:
            return self.refs[model]
        if model not in self.models:
            self.models.append(model)
        return {"$ref": "(pending)"}

    def finalize(self) -> None:
        keyed, top = models_json_schema([(m, "validation") for m in self.models], ref_template=REF)
        self.refs = {m: keyed[(m, "validation")] for m in self.models}
        self.defs = top.get("$defs", {})


def _param_schema(app: Flask, conv: str | None, args: str | None) -> dict[str, Any]:
    cls = app.url_map.converters.get(conv or "default")
    if cls is None:
        return {"type": "string"}
    if issubclass(cls, NumberConverter):
        schema: dict[str, Any] = {
            "type": "integer" if issubclass(cls, IntegerConverter) else "number"
        }
        try:  # the converter's own bounds, e.g. ``<id:...>`` or ``<int(min=1):...>``
            pos, kw = _conv_args(args)
            conv_obj = cls(app.url_map, *pos, **kw)
            if conv_obj.min is not None:
                schema["minimum"] = conv_obj.min
            elif not getattr(conv_obj, "signed", False):
                schema["minimum"] = 0
            if conv_obj.max is not None:
                schema["maximum"] = conv_obj.max
        except Exception:  # an exotic plugin converter: the bare type is still right
            pass
        if issubclass(cls, FloatConverter):
            schema["type"] = "number"
        return schema
    if issubclass(cls, UUIDConverter):
        return {"type": "string", "format": "uuid"}
    if issubclass(cls, PathConverter):
        return {"type": "string"}
    return {"type": "string", "pattern": "^[^/]+$"}


def _conv_args(args: str | None) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if not args:
        return (), {}
    from werkzeug.routing.rules import parse_converter_args

    return parse_converter_args(args)


def _summary(view: Callable[..., Any]) -> tuple[str, str]:
    doc = inspect.getdoc(view) or ""
    first = doc.strip().split("\n\n", 1)[0].replace("\n", " ").strip()
    return first, doc


def _content(schemas: _Schemas, spec: Any) -> dict[str, Any]:
    if spec is None:
        return {}
    if isinstance(spec, type) and issubclass(spec, BaseModel):
        return {"application/json": {"schema": schemas.ref(spec)}}
    content: dict[str, Any] = spec
    return content


def _operation(
    app: Flask, rule: Any, method: str, view: Callable[..., Any], schemas: _Schemas
) -> dict[str, Any]:
    summary, description = _summary(view)
    extra = getattr(view, "prosaas_openapi", {})
    op: dict[str, Any] = {
        "operationId": f"{rule.endpoint}.{method.lower()}",
        "summary": summary or f"{method} {rule.rule}",
        "tags": extra.get("tags") or [rule.endpoint.split(".", 1)[0]],
    }
    if description and description != summary:
        op["description"] = description
    params = []
    for m in _PARAM_RE.finditer(rule.rule):
        params.append(
            {
                "name": m["name"],
                "in": "path",
                "required": True,
                "schema": _param_schema(app, m["conv"], m["args"]),
            }
        )
    query = extra.get("query")
    if query is not None:
        for name, prop in query.model_json_schema(ref_template=REF).get("properties", {}).items():
            params.append({"name": name, "in": "query", "required": False, "schema": prop})
    if params:
        op["parameters"] = params
    body = extra.get("body")
    if body is not None and method in {"POST", "PUT", "PATCH", "DELETE"}:
        op["requestBody"] = {"required": True, "content": _content(schemas, body)}
    responses: dict[str, Any] = {}
    error = {"application/json": {"schema": schemas.ref(_error_model())}}
    for status, (desc, spec) in sorted(extra.get("responses", {}).items()):
        responses[str(status)] = {"description": desc}
        content = _content(schemas, spec)
        if not content and status >= 400:  # every error answer is the JSON error body
            content = error
        if content:
            responses[str(status)]["content"] = content
    if not responses:
        responses["200"] = {"description": "Success"}
    auth = getattr(view, "prosaas_authenticated", False)
    for status, desc in ERROR_STATUSES.items():
        if status == 401 and not auth:
            continue
        responses.setdefault(str(status), {"description": desc, "content": error})
    responses.setdefault("default", {"description": "Error", "content": error})
    op["responses"] = responses
    if auth:
        op["security"] = [{"bearerAuth": []}]
    return op


def _error_model() -> type[BaseModel]:
    from prosaas_core.api.schemas import Error

    return Error


def _openapi_path(rule: Any) -> str:
    return _PARAM_RE.sub(lambda m: "{" + m["name"] + "}", rule.rule)


def _enqueue_schema(app: Flask, schemas: _Schemas) -> dict[str, Any]:
    """``POST /api/jobs`` body: one alternative per installed job type, with its payload."""
    rt = app.extensions["prosaas"]
    variants = []
    for name, jt in sorted(rt.registry.job_types.items()):
        required = ["job_type"]
        if jt.payload_model is not None:
            payload: dict[str, Any] = schemas.ref(jt.payload_model)
            needs_fields = not _accepts_empty(jt.payload_model)
        else:
            payload, needs_fields = {"type": "object"}, False
        if needs_fields:
            required.append("payload")
        else:  # an absent or null payload is validated as {}: the model's defaults
            payload = {"anyOf": [payload, {"type": "null"}]}
        variant: dict[str, Any] = {
            "type": "object",
            "title": name,
            "not": {"required": ["run_at", "delay"]},
            "properties": {
                "job_type": {"const": name},
                "payload": payload,
                # when the job is due: at most one of the two, at most a year ahead
                "run_at": {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}]},
                "delay": {
                    "anyOf": [
                        {"type": "number", "minimum": 0, "maximum": 366 * 86400},
                        {"type": "null"},
                    ]
                },
            },
            "required": required,
            "additionalProperties": False,
        }
        if jt.description:
            variant["description"] = jt.description
        variants.append(variant)
    if not variants:
        from prosaas_core.api.schemas import EnqueueRequest

        return schemas.ref(EnqueueRequest)
    # a union discriminated by job_type: exactly one variant matches any body
    return {"oneOf": variants}


def _accepts_empty(model: type[BaseModel]) -> bool:
    """Whether `model` validates ``{}`` (what an absent or null payload becomes)."""
    from pydantic import ValidationError

    try:
        model.model_validate({})
    except ValidationError:
        return False
    return True


def _paths(app: Flask, schemas: _Schemas) -> dict[str, dict[str, Any]]:
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: (r.rule, r.endpoint)):
        if rule.endpoint == "static" or rule.endpoint.startswith("dashboard."):
            continue  # the dashboard is pages for people, not part of the HTTP API
        view = app.view_functions[rule.endpoint]
        for method in sorted((rule.methods or set()) - _SKIP_METHODS):
            op = _operation(app, rule, method, view, schemas)
            paths.setdefault(_openapi_path(rule), {})[method.lower()] = op
    enqueue = paths.get("/api/jobs", {}).get("post")
    if enqueue is not None:
        enqueue["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _enqueue_schema(app, schemas)}},
        }
    return paths


def build_document(app: Flask) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route `app` serves."""
    from prosaas_core.api.schemas import EnqueueRequest

    schemas = _Schemas()
    schemas.ref(EnqueueRequest)
    _paths(app, schemas)
    schemas.finalize()
    paths = _paths(app, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "prosaas API",
            "version": _version(),
            "description": "Background jobs and leads of one business per bearer token. "
            'Errors are JSON: {"error": ..., "details": ...}.',
        },
        "paths": paths,
        "components": {
            "schemas": schemas.defs,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
    }


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("prosaas")
    except PackageNotFoundError:
        return "0"
