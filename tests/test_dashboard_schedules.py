"""The dashboard's Schedules page: last and next occurrences, pause/resume, business scope."""

from __future__ import annotations

import re

from prosaas_core import schedules
from prosaas_core.api.app import create_app
from prosaas_core.testing import business_with_token
from prosaas_core.tokens import create_admin_token


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def sign_in(client, token: str) -> None:
    csrf = csrf_of(client.get("/dashboard/login").text)
    assert client.post("/dashboard/login", data={"csrf": csrf, "token": token}).status_code == 303


def paused(runtime, schedule_id: int) -> bool:
    return next(s for s in schedules.status(runtime) if s["id"] == schedule_id)["paused"]


def test_schedules_page_scopes_and_steers(runtime):
    app = create_app(runtime=runtime)
    a_id, a_tok = business_with_token(runtime, "Alpha")
    b_id, b_tok = business_with_token(runtime, "Beta")
    mine = schedules.add(runtime, "alpha-nightly", cron="0 2 * * *", job_type="acme_echo",
                         payload={"message": "a"}, business_id=a_id)  # fmt: skip
    theirs = schedules.add(runtime, "beta-hourly", cron="0 * * * *", job_type="acme_echo",
                           payload={"message": "b"}, business_id=b_id)  # fmt: skip

    client = app.test_client()
    assert client.get("/dashboard/schedules").status_code in (302, 303)  # sign-in first
    sign_in(client, a_tok)
    page = client.get("/dashboard/schedules").text
    assert "alpha-nightly" in page and "beta-hourly" not in page
    csrf = csrf_of(page)
    # another business's schedule answers like a missing one, and stays as it was
    for sid in (theirs["id"], 987654321):
        resp = client.post(f"/dashboard/schedules/{sid}/pause", data={"csrf": csrf})
        assert resp.status_code == 404
    assert paused(runtime, theirs["id"]) is False
    assert client.post(f"/dashboard/schedules/{mine['id']}/pause").status_code == 403  # no CSRF
    resp = client.post(f"/dashboard/schedules/{mine['id']}/pause", data={"csrf": csrf})
    assert resp.status_code == 303 and paused(runtime, mine["id"]) is True
    assert "<strong>paused</strong>" in client.get("/dashboard/schedules").text
    client.post(f"/dashboard/schedules/{mine['id']}/resume", data={"csrf": csrf})
    assert paused(runtime, mine["id"]) is False

    with runtime.session() as s:
        admin = create_admin_token(s, "ops")[0]
    operator = app.test_client()
    sign_in(operator, admin)
    page = operator.get("/dashboard/schedules").text
    for name in ("alpha-nightly", "beta-hourly", "acme-new-year", "recordings-retention"):
        assert name in page, name
    assert 'href="/dashboard/schedules"' in page
