"""Request hooks of the dashboard (session, sign-in required, CSRF, error pages) and sign-in.

The page views live in ``job_views`` and ``system_views``.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import g, jsonify, redirect, render_template, request, url_for
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from werkzeug.exceptions import HTTPException

from prosaas_core.dashboard import bp, session
from prosaas_core.errors import ConflictError, NotFoundError, first_line

log = logging.getLogger("prosaas.dashboard")

#: endpoints served without a signed-in viewer
PUBLIC = {"dashboard.login", "dashboard.static"}

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)


def wants_json() -> bool:
    """Errors are JSON ``{"error", "details"}`` for the polled endpoints and for any client
    that does not ask for HTML (scripts, the API's fuzz test); a page for browsers."""
    return request.path.startswith("/dashboard/api/") or not request.accept_mimetypes.accept_html


@bp.before_request
def _before() -> Any:
    if request.endpoint == "dashboard.static":
        return None
    session.load()
    if request.method == "POST":
        session.check_csrf()
    if request.endpoint not in PUBLIC and g.viewer is None:
        if request.path.startswith("/dashboard/api/"):
            return _error(401, "Unauthorized", "sign in at /dashboard/login")
        return redirect(url_for("dashboard.login", next=_next_path()))
    return None


@bp.after_request
def _after(resp):
    if request.endpoint == "dashboard.static":
        return resp
    resp.headers["Content-Security-Policy"] = CSP
    return session.save(resp)


def _next_path() -> str:
    """Where to go after sign-in: this page (a path only, so it cannot leave the site)."""
    full = request.full_path.rstrip("?")
    return full if full.startswith("/dashboard") and not full.startswith("//") else ""


def _error(status: int, error: str, details: Any = None):
    if wants_json():
        resp = jsonify({"error": error, "details": details})
        resp.status_code = status
        return resp
    page = render_template("dashboard/error.html", status=status, error=error, details=details)
    return page, status


@bp.errorhandler(HTTPException)
def _http(exc: HTTPException):
    return _error(exc.code or 500, exc.name, exc.description)


@bp.errorhandler(RedisConnectionError)
@bp.errorhandler(RedisTimeoutError)
def _redis_away(exc: Exception):
    log.error("Redis unavailable on %s %s: %s", request.method, request.path, first_line(exc))
    return _error(503, "Service unavailable", "a dependency could not be reached; retry later")


@bp.errorhandler(NotFoundError)
def _not_found(exc: NotFoundError):
    return _error(404, "Not found", str(exc))


@bp.errorhandler(ConflictError)
def _conflict(exc: ConflictError):
    return _error(409, "Conflict", str(exc))


@bp.app_template_global()
def csrf_token() -> str:
    return session.csrf_token()


@bp.route("/login", methods=["GET", "POST"])
def login():
    """Sign in by pasting a token into a POST form (never a URL, so never in a log)."""
    nxt = request.values.get("next", "")
    if not nxt.startswith("/dashboard") or nxt.startswith("//") or len(nxt) > 500:
        nxt = url_for("dashboard.overview")
    if request.method == "GET":
        if g.viewer is not None:
            return redirect(nxt)
        return render_template("dashboard/login.html", next=nxt, failed=False)
    viewer = session.sign_in(request.form.get("token", ""))
    if viewer is None:
        if wants_json():
            return _error(401, "Unauthorized", "that token is unknown or revoked")
        return render_template("dashboard/login.html", next=nxt, failed=True), 401
    return redirect(nxt, code=303)


@bp.route("/logout", methods=["POST"])
def logout():
    session.sign_out()
    return redirect(url_for("dashboard.login"), code=303)


from prosaas_core.dashboard import (  # noqa: E402,F401
    history_views,
    job_views,
    schedule_views,
    system_views,
)
