"""Schedules: each schedule's last occurrence and its jobs, the next one, problems, and
pause/resume. An operator sees every schedule; a business sees its own."""

from __future__ import annotations

from flask import g, redirect, render_template, url_for

from prosaas_core.dashboard import bp
from prosaas_core.dashboard.session import runtime


@bp.route("/schedules")
def schedules():
    from prosaas_core.schedules import status

    rows = status(runtime(), business_id=g.viewer.scope)
    return render_template("dashboard/schedules.html", page="schedules", schedules=rows)


def _steer(schedule_id: int, paused: bool):
    from prosaas_core.schedules import set_paused

    # a business steers its own schedules only: another's answers 404 like a missing one
    set_paused(runtime(), schedule_id, paused, business_id=g.viewer.scope)
    return redirect(url_for("dashboard.schedules"), code=303)


@bp.route("/schedules/<int(max=9223372036854775807):schedule_id>/pause", methods=["POST"])
def pause_schedule(schedule_id: int):
    return _steer(schedule_id, True)


@bp.route("/schedules/<int(max=9223372036854775807):schedule_id>/resume", methods=["POST"])
def resume_schedule(schedule_id: int):
    return _steer(schedule_id, False)
