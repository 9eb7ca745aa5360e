"""Dashboard sign-in: a signed session cookie, who the viewer is, and CSRF on every POST.

The cookie holds the signed-in token's *id* (never the token) and a CSRF secret; it is signed
with ``PROSAAS_SECRET_KEY`` (or, when that is not set, a random key kept in Redis so every
``prosaas serve`` process shares it, reading it again every ``SECRET_REFRESH``; a Redis flush
then signs everyone out, a hung Redis nobody). Each request
checks that the token is still live, so revoking it ends the session on the next request.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any, cast

from flask import Response, abort, current_app, g, request
from itsdangerous import BadSignature, URLSafeTimedSerializer

from prosaas_core.runtime import Runtime

COOKIE = "prosaas_dashboard"
COOKIE_PATH = "/dashboard"
#: a session lasts this long after sign-in, then the viewer signs in again
MAX_AGE = 12 * 3600
SECRET_KEY = "prosaas:dashboard:secret"
SALT = "prosaas-dashboard-session"
#: seconds a process signs with the Redis-kept key before reading it again
SECRET_REFRESH = 30.0


@dataclass(frozen=True)
class Viewer:
    """Who is looking: an operator (every business) or one business."""

    admin: bool
    token_id: int
    business_id: int | None = None

    @property
    def scope(self) -> int | None:
        """The business every query is limited to; None for an operator."""
        return None if self.admin else self.business_id

    @property
    def label(self) -> str:
        return "operator" if self.admin else f"business {self.business_id}"


def runtime() -> Runtime:
    return current_app.extensions["prosaas"]


def _secret(rt: Runtime) -> str:
    configured = rt.settings.get("PROSAAS_SECRET_KEY")
    if configured:
        return configured
    # Read again every SECRET_REFRESH, not per request: a hung Redis then holds one request
    # per SECRET_REFRESH, not every page. (value, monotonic time read): replaced whole.
    kept: tuple[str, float] | None = current_app.extensions.get("prosaas_dashboard_secret")
    if kept is not None and time.monotonic() - kept[1] < SECRET_REFRESH:
        return kept[0]
    from redis.exceptions import ConnectionError, TimeoutError

    if kept is not None:  # this request refreshes it: the others meanwhile sign with the kept one
        current_app.extensions["prosaas_dashboard_secret"] = (kept[0], time.monotonic())
    r = rt.request_redis
    try:
        value = r.get(SECRET_KEY)
        if value is None:  # the first process to need one makes it; the others read that one
            r.set(SECRET_KEY, secrets.token_urlsafe(32), nx=True)
            value = r.get(SECRET_KEY)
    except (ConnectionError, TimeoutError):
        if kept is None:
            raise
        # Redis is away: sign with the key every process has, and ask again a while later
        current_app.extensions["prosaas_dashboard_secret"] = (kept[0], time.monotonic())
        return kept[0]
    if not value:  # never sign with an empty key
        abort(503, "the dashboard's signing key could not be read from Redis")
    key = cast(bytes, value).decode()  # the runtime's client returns bytes
    current_app.extensions["prosaas_dashboard_secret"] = (key, time.monotonic())
    return key


def _serializer(rt: Runtime) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(_secret(rt), salt=SALT)


def load() -> None:
    """Read the cookie into ``g.session`` (a fresh anonymous one when missing or invalid) and
    ``g.viewer`` (None unless signed in with a still-live token)."""
    rt = runtime()
    serializer = _serializer(rt)  # here, not first in `save`: Redis away is then a clean 503
    data: dict[str, Any] = {}
    raw = request.cookies.get(COOKIE)
    if raw:
        try:
            loaded = serializer.loads(raw, max_age=MAX_AGE)
            data = loaded if isinstance(loaded, dict) else {}
        except BadSignature:
            data = {}
    g.session_dirty = not isinstance(data.get("csrf"), str)
    if g.session_dirty:
        data = {"csrf": secrets.token_urlsafe(24)}
    g.session = data
    g.viewer = _viewer(rt, data)
    if g.viewer is None and "kind" in data:  # revoked or unknown token: sign out
        g.session = {"csrf": data["csrf"]}
        g.session_dirty = True


def _viewer(rt: Runtime, data: dict[str, Any]) -> Viewer | None:
    from prosaas_core.tokens import admin_token_live, business_token_live

    kind, tid, bid = data.get("kind"), data.get("tid"), data.get("bid")
    if not isinstance(tid, int):
        return None
    if kind == "admin" and admin_token_live(rt.engine, tid):
        return Viewer(admin=True, token_id=tid)
    if kind == "business" and isinstance(bid, int) and business_token_live(rt.engine, tid, bid):
        return Viewer(admin=False, token_id=tid, business_id=bid)
    return None


def sign_in(token: str) -> Viewer | None:
    """Check a pasted token (admin first, then business); on success start a new session
    (new CSRF secret, so a value planted before sign-in is worthless)."""
    from prosaas_core.tokens import ADMIN_PREFIX, lookup_admin_token, lookup_business_token

    rt = runtime()
    token = token.strip()
    if not token or len(token) > 200:
        return None
    viewer: Viewer | None = None
    if token.startswith(ADMIN_PREFIX):
        tid = lookup_admin_token(rt.engine, token)
        if tid is not None:
            viewer = Viewer(admin=True, token_id=tid)
    else:
        found = lookup_business_token(rt.engine, token)
        if found is not None:
            viewer = Viewer(admin=False, token_id=found[0], business_id=found[1])
    if viewer is None:
        return None
    g.session = {
        "csrf": secrets.token_urlsafe(24),
        "kind": "admin" if viewer.admin else "business",
        "tid": viewer.token_id,
        "bid": viewer.business_id,
    }
    g.session_dirty = True
    g.viewer = viewer
    return viewer


def sign_out() -> None:
    g.session = {"csrf": secrets.token_urlsafe(24)}
    g.session_dirty = True
    g.viewer = None


def csrf_token() -> str:
    return g.session["csrf"]


def check_csrf() -> None:
    """403 unless the POST carries the session's CSRF value (form field ``csrf`` or header
    ``X-CSRF-Token``)."""
    sent = request.form.get("csrf") or request.headers.get("X-CSRF-Token") or ""
    if not hmac.compare_digest(sent.encode(), csrf_token().encode()):
        abort(403, "missing or wrong CSRF token: reload the page and try again")


def save(resp: Response) -> Response:
    """Write the cookie when the session changed; pages are never cached (they show live,
    per-viewer data)."""
    if getattr(g, "session_dirty", False):
        resp.set_cookie(
            COOKIE,
            _serializer(runtime()).dumps(g.session),
            max_age=MAX_AGE,
            path=COOKIE_PATH,
            httponly=True,
            samesite="Lax",
            secure=request.is_secure,
        )
    resp.headers["Cache-Control"] = "no-store"
    resp.headers.setdefault("X-Frame-Options", "DENY")
    resp.headers.setdefault("Referrer-Policy", "same-origin")
    return resp
