"""The dashboard through Flask's test client: every route, sign-in, scoping and CSRF."""

from __future__ import annotations

import base64
import json
import logging
import re

import pytest
from sqlalchemy import text

from prosaas_core.api.app import create_app
from prosaas_core.jobs.enqueue import enqueue
from prosaas_core.testing import bearer, business_with_token
from prosaas_core.tokens import create_admin_token

PAGES = ["/dashboard/", "/dashboard/jobs", "/dashboard/workers", "/dashboard/system"]
POLLS = ["/dashboard/api/overview", "/dashboard/api/workers", "/dashboard/api/jobs?ids=1"]


@pytest.fixture
def app(runtime):
    return create_app(runtime=runtime)


@pytest.fixture
def admin_token(runtime) -> str:
    with runtime.session() as s:
        return create_admin_token(s, "ops")[0]


@pytest.fixture
def two_businesses(runtime):
    """Two businesses with a token each, and a job each: ((id, token, job), (id, token, job))."""
    out = []
    for name in ("Alpha", "Beta"):
        bid, token = business_with_token(runtime, name)
        job = enqueue(runtime, "acme_echo", bid, {"message": name}).id
        out.append((bid, token, job))
    return out


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def sign_in(client, token: str):
    csrf = csrf_of(client.get("/dashboard/login").text)
    resp = client.post("/dashboard/login", data={"csrf": csrf, "token": token})
    assert resp.status_code == 303, resp.text
    return resp


def set_status(runtime, job_id: int, status: str, error: str | None = None) -> None:
    with runtime.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE background_jobs SET status = :s, error = :e, "
                "finished_at = CASE WHEN :s IN ('failed','succeeded','cancelled') THEN now() END "
                "WHERE id = :i"
            ),
            {"s": status, "e": error, "i": job_id},
        )


def test_every_route_needs_sign_in(app):
    client = app.test_client()
    for path in PAGES + ["/dashboard/jobs/1"]:
        resp = client.get(path)
        assert resp.status_code == 302, path
        assert resp.headers["Location"].startswith("/dashboard/login?next=/dashboard")
    for path in POLLS:
        resp = client.get(path)
        assert resp.status_code == 401 and resp.json["error"] == "Unauthorized", path
    csrf = csrf_of(client.get("/dashboard/login").text)
    for path in ("/dashboard/jobs/1/cancel", "/dashboard/jobs/1/retry"):
        resp = client.post(path, data={"csrf": csrf})
        assert resp.status_code == 302 and "/dashboard/login" in resp.headers["Location"]
    # the static files are public (the sign-in page needs them)
    assert client.get("/dashboard/static/dashboard.css").status_code == 200


def test_sign_in_out_and_the_cookie(app, admin_token, caplog):
    caplog.set_level(logging.DEBUG)
    client = app.test_client()
    page = client.get("/dashboard/login")
    assert page.status_code == 200 and 'type="password"' in page.text
    csrf = csrf_of(page.text)
    bad = client.post("/dashboard/login", data={"csrf": csrf, "token": "psa_nope"})
    assert bad.status_code == 401 and "unknown or revoked" in bad.text
    assert bad.json == {"error": "Unauthorized", "details": "that token is unknown or revoked"}
    resp = client.post(
        "/dashboard/login", data={"csrf": csrf, "token": admin_token, "next": "/dashboard/jobs"}
    )
    assert resp.status_code == 303 and resp.headers["Location"] == "/dashboard/jobs"
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/dashboard" in cookie
    value = cookie.split(";")[0].split("=", 1)[1]
    payload = base64.urlsafe_b64decode(value.split(".")[0] + "==").decode()
    assert json.loads(payload)["kind"] == "admin" and admin_token not in value
    assert "operator" in client.get("/dashboard/").text
    # an outside `next` is ignored: sign-in never redirects off the dashboard
    other = app.test_client()
    c2 = csrf_of(other.get("/dashboard/login").text)
    resp = other.post(
        "/dashboard/login", data={"csrf": c2, "token": admin_token, "next": "//evil.example/"}
    )
    assert resp.headers["Location"] == "/dashboard/"
    # sign out: a POST with CSRF
    page = client.get("/dashboard/jobs").text
    assert client.post("/dashboard/logout", data={"csrf": csrf_of(page)}).status_code == 303
    assert client.get("/dashboard/").status_code == 302
    assert all(admin_token not in r.getMessage() for r in caplog.records)


def test_csrf_is_required_on_every_post(app, runtime, admin_token, two_businesses):
    (_, _, job), _ = two_businesses
    client = app.test_client()
    # sign-in itself: no CSRF value, or one from another session
    assert client.post("/dashboard/login", data={"token": admin_token}).status_code == 403
    stranger = csrf_of(app.test_client().get("/dashboard/login").text)
    client.get("/dashboard/login")
    resp = client.post("/dashboard/login", data={"token": admin_token, "csrf": stranger})
    assert resp.status_code == 403
    sign_in(client, admin_token)
    for path in (
        f"/dashboard/jobs/{job}/cancel",
        f"/dashboard/jobs/{job}/retry",
        "/dashboard/logout",
    ):
        assert client.post(path).status_code == 403, path
        assert client.post(path, data={"csrf": "wrong"}).status_code == 403, path
    assert runtime_status(runtime, job) == "queued"
    # the header form works too (for scripts that keep the cookie)
    csrf = csrf_of(client.get(f"/dashboard/jobs/{job}").text)
    resp = client.post(f"/dashboard/jobs/{job}/cancel", headers={"X-CSRF-Token": csrf})
    assert resp.status_code == 303 and runtime_status(runtime, job) == "cancelled"


def runtime_status(runtime, job_id: int) -> str:
    with runtime.engine.connect() as conn:
        return conn.execute(
            text("SELECT status FROM background_jobs WHERE id = :i"), {"i": job_id}
        ).scalar_one()


def test_business_sees_only_its_business(app, runtime, two_businesses):
    (a_id, a_token, a_job), (b_id, _, b_job) = two_businesses
    client = app.test_client()
    sign_in(client, a_token)
    listing = client.get("/dashboard/jobs").text
    assert f'data-job="{a_job}"' in listing and f'data-job="{b_job}"' not in listing
    # a business filter in the URL is ignored for a business viewer
    listing = client.get(f"/dashboard/jobs?business={b_id}").text
    assert f'data-job="{b_job}"' not in listing
    assert client.get(f"/dashboard/jobs/{a_job}").status_code == 200
    assert client.get(f"/dashboard/jobs/{b_job}").status_code == 404
    assert client.get("/dashboard/jobs/999999").status_code == 404
    csrf = csrf_of(listing)
    for action in ("cancel", "retry"):
        resp = client.post(f"/dashboard/jobs/{b_job}/{action}", data={"csrf": csrf})
        assert resp.status_code == 404
    assert runtime_status(runtime, b_job) == "queued"
    polled = client.get(f"/dashboard/api/jobs?ids={a_job},{b_job}").json["jobs"]
    assert [j["id"] for j in polled] == [a_job]
    overview = client.get("/dashboard/api/overview").json
    assert sum(q["queued"] for q in overview["queues"].values()) == 1
    assert all("in_redis" not in q for q in overview["queues"].values())
    # the deployment-wide pages are for operators
    for path in ("/dashboard/workers", "/dashboard/system", "/dashboard/api/workers"):
        assert client.get(path).status_code == 403, path
    assert "Workers</a>" not in client.get("/dashboard/").text


def test_operator_sees_every_business_and_filters(app, runtime, admin_token, two_businesses):
    (a_id, _, a_job), (b_id, _, b_job) = two_businesses
    set_status(runtime, b_job, "failed", "RuntimeError: boom\nTraceback line")
    client = app.test_client()
    sign_in(client, admin_token)
    listing = client.get("/dashboard/jobs").text
    assert f'data-job="{a_job}"' in listing and f'data-job="{b_job}"' in listing
    assert "RuntimeError: boom" in listing and "Traceback line" not in listing
    failed = client.get("/dashboard/jobs?status=failed").text
    assert f'data-job="{b_job}"' in failed and f'data-job="{a_job}"' not in failed
    by_business = client.get(f"/dashboard/jobs?business={a_id}").text
    assert f'data-job="{a_job}"' in by_business and f'data-job="{b_job}"' not in by_business
    assert f'data-job="{a_job}"' in client.get("/dashboard/jobs?type=acme_echo&since=1h").text
    assert f'data-job="{a_job}"' not in client.get("/dashboard/jobs?queue=acme").text
    for bad in ("status=bogus", "since=2y", "business=x", "before=-1", "type=" + "x" * 64):
        resp = client.get(f"/dashboard/jobs?{bad}")
        assert resp.status_code == 400, bad


def test_keyset_pages(app, runtime, admin_token):
    bid, _ = business_with_token(runtime)
    ids = [enqueue(runtime, "acme_echo", bid, {"message": str(i)}).id for i in range(55)]
    client = app.test_client()
    sign_in(client, admin_token)
    first = client.get("/dashboard/jobs").text
    shown = [int(x) for x in re.findall(r'data-job="(\d+)"', first)]
    assert shown == sorted(ids, reverse=True)[:50]
    older = re.search(r'href="([^"]+)" rel="next"', first).group(1).replace("&amp;", "&")
    assert f"before={shown[-1]}" in older
    second = client.get(older).text
    assert [int(x) for x in re.findall(r'data-job="(\d+)"', second)] == sorted(ids)[:5][::-1]
    assert 'rel="next"' not in second and "Newest" in second


def test_job_page_cancel_and_retry(app, runtime, admin_token):
    bid, _ = business_with_token(runtime)
    job = enqueue(runtime, "acme_echo", bid, {"message": "payload-marker"}).id
    client = app.test_client()
    sign_in(client, admin_token)
    page = client.get(f"/dashboard/jobs/{job}").text
    assert "payload-marker" in page and "Cancel job" in page
    resp = client.post(f"/dashboard/jobs/{job}/cancel", data={"csrf": csrf_of(page)})
    assert resp.status_code == 303 and resp.headers["Location"].endswith("done=cancel")
    assert runtime_status(runtime, job) == "cancelled"
    page = client.get(resp.headers["Location"]).text
    assert "Cancel requested." in page
    # cancelling again: a conflict page, not a crash
    again = client.post(f"/dashboard/jobs/{job}/cancel", data={"csrf": csrf_of(page)})
    assert again.status_code == 409 and "already cancelled" in again.text
    set_status(runtime, job, "failed", "ValueError: bad")
    page = client.get(f"/dashboard/jobs/{job}").text
    assert "ValueError: bad" in page
    resp = client.post(f"/dashboard/jobs/{job}/retry", data={"csrf": csrf_of(page)})
    assert resp.status_code == 303 and runtime_status(runtime, job) == "queued"
    polled = client.get(f"/dashboard/api/jobs?ids={job}").json["jobs"][0]
    assert polled["status"] == "queued" and polled["error"] is None


def test_poll_endpoint_shape_and_caps(app, runtime, admin_token):
    bid, _ = business_with_token(runtime)
    job = enqueue(runtime, "acme_echo", bid, {"message": "x"}).id
    with runtime.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE background_jobs SET status='running', processed=50, total=200, "
                "started_at = now() - interval '10 seconds' WHERE id = :i"
            ),
            {"i": job},
        )
    client = app.test_client()
    sign_in(client, admin_token)
    j = client.get(f"/dashboard/api/jobs?ids={job}").json["jobs"][0]
    assert j["percent"] == 25.0 and j["processed"] == 50 and j["total"] == 200
    assert 4 < j["rate"] < 5.5 and 25 < j["eta_seconds"] < 40
    assert client.get("/dashboard/api/jobs?ids=").json == {"jobs": []}
    for bad in ("1,a", ",".join(["1"] * 101), "-1"):
        resp = client.get(f"/dashboard/api/jobs?ids={bad}")
        assert resp.status_code == 400 and resp.json["error"], bad


def test_overview_counts_chart_and_flow(app, runtime, admin_token):
    bid, _ = business_with_token(runtime)
    done = [enqueue(runtime, "acme_echo", bid, {"message": str(i)}).id for i in range(3)]
    for job in done:
        set_status(runtime, job, "succeeded")
    set_status(runtime, enqueue(runtime, "acme_fail", bid, {}).id, "failed", "boom")
    enqueue(runtime, "acme_count", bid, {"n": 5})
    for _ in range(3):  # concurrency_per_business=2: the third one is parked
        enqueue(runtime, "acme_slot", bid, {})
    client = app.test_client()
    sign_in(client, admin_token)
    data = client.get("/dashboard/api/overview").json
    assert data["queues"]["acme"]["queued"] == 1 and data["queues"]["acme"]["in_redis"] == 1
    assert data["queues"]["default"]["failed_1h"] == 1
    assert sum(data["throughput"]["series"]["acme_echo"]) == 3
    assert sum(data["throughput"]["series"]["acme_fail"]) == 1
    assert len(data["throughput"]["series"]["acme_echo"]) == 60
    (flow,) = [r for r in data["flow"] if r["job_type"] == "acme_slot"]
    assert flow["concurrency"] == 2 and flow["slots_held"] == 2 and flow["parked"] == 1
    assert data["queues"]["flow"]["parked"] == 1
    assert "<svg" in data["html"] and "acme_echo: 3" in data["html"]
    page = client.get("/dashboard/").text
    assert "Finished per minute" in page and "acme_slot" in page


def test_workers_page_and_the_nobody_consuming_warning(app, runtime, admin_token):
    from prosaas_core.jobs.heartbeat import WorkerHeartbeat

    bid, _ = business_with_token(runtime)
    enqueue(runtime, "acme_count", bid, {"n": 1})  # queue "acme": nobody consumes it
    client = app.test_client()
    sign_in(client, admin_token)
    page = client.get("/dashboard/workers").text
    assert "No live worker" in page
    assert "queue &#39;acme&#39;: 1 pending job(s) and no live worker consuming it" in page
    beat = WorkerHeartbeat(
        runtime,
        "w-test",
        ["default", "acme"],
        lambda: {"acme-ticker": {"state": "running", "restarts": 0, "last_error": None}},
        lambda: 42,
    )
    beat.beat()
    try:
        data = client.get("/dashboard/api/workers").json
        (w,) = data["workers"]
        assert w["name"] == "w-test" and w["current_job"] == 42
        assert 'data-worker="w-test"' in data["html"] and "acme-ticker: " in data["html"]
        assert "pending job(s) and no live worker" not in data["html"]
        assert "queue &#39;acme&#39;: 1 pending, 1 live worker(s)" in data["html"]
        assert "acme-ticker" in data["services"]
    finally:
        beat.stop()


def test_system_page_plugins_sync_and_history(app, runtime, admin_token):
    client = app.test_client()
    sign_in(client, admin_token)
    page = client.get("/dashboard/system").text
    assert "In sync" in page and "acme_echo" in page and "Echo a message" in page
    assert "2 at once per business" in page and "20/s per business" in page
    assert re.search(r'<th scope="row">1</th>', page)
    with runtime.engine.begin() as conn:
        conn.execute(text("ALTER TABLE background_jobs DROP CONSTRAINT chk_job_type"))
    page = client.get("/dashboard/system").text
    assert "Drift" in page and "chk_job_type is missing" in page


def test_revoked_token_ends_the_session(app, cli, runtime, admin_token, two_businesses):
    (_, a_token, _), _ = two_businesses
    operator, business = app.test_client(), app.test_client()
    sign_in(operator, admin_token)
    sign_in(business, a_token)
    cli("tokens", "revoke", admin_token[:10], check=True)
    cli("tokens", "revoke", a_token, check=True)
    assert operator.get("/dashboard/").status_code == 302
    assert business.get("/dashboard/api/overview").status_code == 401


def test_admin_tokens_cli(cli, runtime, app):
    out = json.loads(
        cli("tokens", "create", "--admin", "--name", "ops", "--json", check=True).stdout
    )
    token = out["token"]
    assert token.startswith("psa_") and out["admin"] is True and out["prefix"] == token[:10]
    with runtime.engine.connect() as conn:
        stored = conn.execute(text("SELECT token_hash, prefix FROM prosaas_admin_tokens")).all()
    assert len(stored) == 1 and token not in json.dumps([list(r) for r in stored])
    plain = cli("tokens", "create", "--admin", check=True).stdout.strip()
    assert plain.startswith("psa_") and plain != token
    rows = json.loads(cli("tokens", "list", "--admin", "--json", check=True).stdout)
    assert [r["name"] for r in rows] == ["ops", None]
    # an admin token is for the dashboard only: the business API refuses it
    assert app.test_client().get("/api/jobs", headers=bearer(token)).status_code == 401
    assert cli("tokens", "revoke", out["prefix"], check=True).stdout.strip() == "revoked 1 token"
    rows = json.loads(cli("tokens", "list", "--admin", "--json", check=True).stdout)
    assert rows[0]["revoked_at"] is not None and rows[1]["revoked_at"] is None
    for args in (("tokens", "create"), ("tokens", "create", "--admin", "--business", "1")):
        proc = cli(*args)
        assert proc.returncode == 1 and proc.stderr.strip() == (
            "error: give either --business ID or --admin"
        )
    assert cli("tokens", "list").returncode == 1


def test_overview_hour_window_and_cached_minutes(app, runtime, admin_token):
    bid, _ = business_with_token(runtime)
    old = [enqueue(runtime, "acme_echo", bid, {"message": str(i)}).id for i in range(4)]
    with runtime.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE background_jobs SET status = 'succeeded', finished_at = now() - "
                "CASE WHEN id = :last THEN interval '70 minutes' ELSE interval '10 minutes' END"
            ),
            {"last": old[-1]},
        )
    client = app.test_client()
    sign_in(client, admin_token)
    series = client.get("/dashboard/api/overview").json["throughput"]["series"]["acme_echo"]
    assert sum(series) == 3 and sum(series[48:51]) == 3  # ten minutes before the current one
    for job in [enqueue(runtime, "acme_echo", bid, {"message": "new"}).id for _ in range(2)]:
        set_status(runtime, job, "succeeded")
    series = client.get("/dashboard/api/overview").json["throughput"]["series"]["acme_echo"]
    assert sum(series) == 5 and sum(series[58:]) == 2


def test_cookie_is_signed_with_the_shared_key(env, runtime, admin_token):
    """Two API processes with one PROSAAS_SECRET_KEY accept each other's sessions; a cookie
    signed with another key (or edited) is a signed-out visitor."""
    one = create_app({**env, "PROSAAS_SECRET_KEY": "k1"}).test_client()
    sign_in(one, admin_token)
    value = one.get_cookie("prosaas_dashboard", path="/dashboard").value
    for key, cookie, status in [
        ("k1", value, 200),
        ("k2", value, 302),
        ("k1", value[:-2] + ("AA" if value[-2:] != "AA" else "BB"), 302),
    ]:
        other = create_app({**env, "PROSAAS_SECRET_KEY": key}).test_client()
        other.set_cookie("prosaas_dashboard", cookie, path="/dashboard")
        assert other.get("/dashboard/").status_code == status, key
    # without the setting, every process shares a random key kept in Redis
    a, b = create_app(env).test_client(), create_app(env).test_client()
    sign_in(a, admin_token)
    b.set_cookie(
        "prosaas_dashboard",
        a.get_cookie("prosaas_dashboard", path="/dashboard").value,
        path="/dashboard",
    )
    assert b.get("/dashboard/").status_code == 200


def test_deleting_the_kept_key_rotates_it(env, runtime, admin_token, monkeypatch):
    """The Redis-kept key is read again every SECRET_REFRESH: deleting it (or a flush) makes a
    new one there, and sessions signed with the old one are signed out."""
    from prosaas_core.dashboard import session

    monkeypatch.setattr(session, "SECRET_REFRESH", 0.0)  # read Redis on every request
    a = create_app(env).test_client()
    sign_in(a, admin_token)
    assert a.get("/dashboard/").status_code == 200
    old = runtime.redis.get(session.SECRET_KEY)
    runtime.redis.delete(session.SECRET_KEY)
    assert a.get("/dashboard/").status_code == 302  # to the sign-in page
    new = runtime.redis.get(session.SECRET_KEY)
    assert new and new != old


def test_every_dashboard_id_route_is_scoped(app, runtime, two_businesses):
    """Every dashboard route that takes a job id (read from the url_map) answers another
    business's job exactly like a missing one, and changes nothing."""
    (_, _, a_job), (_, b_token, _) = two_businesses
    client = app.test_client()
    sign_in(client, b_token)
    csrf = csrf_of(client.get("/dashboard/jobs").text)
    checked = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/dashboard/") or "job_id" not in rule.arguments:
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            answers = []
            for job_id in (a_job, 987654321):
                url = re.sub(r"<[^>]*job_id>", str(job_id), rule.rule)
                resp = client.open(url, method=method, data={"csrf": csrf})
                assert resp.status_code == 404, (method, url)
                answers.append(resp.get_data(as_text=True).replace(str(job_id), "ID"))
            assert answers[0] == answers[1], (method, rule.rule)
            checked.append(f"{method} {rule.rule}")
    assert len(checked) == 3, checked
    assert runtime_status(runtime, a_job) == "queued"
