"""The dashboard: server-rendered pages where operators and businesses watch and steer jobs.

``bp`` is mounted at ``/dashboard`` by ``create_app``. Pages: Overview, Jobs (and one job),
Schedules, History (finished jobs per day, kept after pruning), Workers and services,
Migrations and plugins; the live ones poll a small JSON endpoint. Sign-in with an admin token
(every business) or a business token (that business only); see ``session.py`` for the cookie
and CSRF, docs/dashboard.md for the tour.
"""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint(
    "dashboard",
    __name__,
    url_prefix="/dashboard",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)

from prosaas_core.dashboard import views  # noqa: E402,F401 -- registers the routes on bp
