"""The API through the Flask test client: validation, dry runs, caps, tenant isolation,
pause/resume/cancel transitions (real PostgreSQL and Redis, no worker)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time

import pytest
import redis
from prosaas_outbound_calls.testing import CALLER, add_business, add_leads, phone
from sqlalchemy import text

URL = "/api/outbound-calls"


def body(**kw):
    return {"all": True, "caller_id": CALLER, **kw}


def _jobs(runtime) -> list[tuple]:
    with runtime.session() as s:
        return s.execute(text("SELECT business_id, job_type, queue FROM background_jobs")).all()


@pytest.mark.parametrize(
    "payload, needle",
    [
        ({"caller_id": CALLER}, "one of lead_ids, filter"),
        ({"all": True}, "caller_id"),
        ({"all": True, "caller_id": "2125550100"}, "E.164"),
        ({"all": True, "caller_id": CALLER, "max_concurrent": 0}, "max_concurrent"),
        ({"all": True, "caller_id": CALLER, "calls_per_second": 0}, "calls_per_second"),
        ({"all": True, "caller_id": CALLER, "twiml_url": "ftp://x"}, "http"),
        ({"all": True, "caller_id": CALLER, "twiml_url": "https://" + "x" * 2000}, "twiml_url"),
        ({"all": True, "caller_id": CALLER, "retry": {"attempts": 9}}, "attempts"),
        ({"all": True, "caller_id": CALLER, "retry": {"on": ["failed"]}}, "on"),
        ({"all": True, "caller_id": CALLER, "machine_detection": "yes"}, "machine_detection"),
        ({"all": True, "caller_id": CALLER, "colour": "red"}, "colour"),
    ],
)
def test_bad_payloads_are_400_and_enqueue_nothing(runtime, client, acme, payload, needle):
    resp = client.post(URL, json=payload, headers=acme[1])
    assert resp.status_code == 400, resp.get_json()
    data = resp.get_json()
    assert data["error"] == "Invalid payload" and needle in str(data["details"])
    assert _jobs(runtime) == []


def test_caller_id_must_be_one_of_the_business_numbers(runtime, client, acme):
    resp = client.post(URL, json=body(caller_id="+12125550199"), headers=acme[1])
    assert resp.status_code == 400
    data = resp.get_json()
    assert data["error"] == "Invalid campaign"
    assert data["details"]["configured"] == [CALLER]
    # another business's number is not this business's either
    add_business(runtime, "Other", caller="+12125550177")
    resp = client.post(URL, json=body(caller_id="+12125550177"), headers=acme[1])
    assert resp.status_code == 400
    assert _jobs(runtime) == []


def test_needs_a_token_and_json(client, acme):
    assert client.post(URL, json=body()).status_code == 401
    assert client.post(URL, data="x", headers=acme[1]).status_code == 415
    assert client.get(f"{URL}/1").status_code == 401


def test_dry_run_previews_counts_and_enqueues_nothing(runtime, client, acme):
    business_id, auth = acme
    add_leads(runtime, business_id, [phone(1), phone(2), "(212) 200-0001", "12345", None])
    add_leads(runtime, business_id, [phone(3)], tags=["vip", "DNC"])
    with runtime.session() as s:
        s.execute(
            text("INSERT INTO outbound_do_not_call (business_id, phone) VALUES (:b, :p)"),
            {"b": business_id, "p": phone(2)},
        )
    resp = client.post(
        URL, json=body(dry_run=True, max_concurrent=500, calls_per_second=2), headers=auth
    )
    assert resp.status_code == 200, resp.get_json()
    data = resp.get_json()
    assert data["dry_run"] is True
    assert data["leads"] == {
        "total_leads": 6,
        "to_call": 1,
        "skipped_invalid": 2,
        "skipped_dnc": 2,
        "skipped_duplicate": 1,
    }
    assert data["max_concurrent"] == 20  # capped by the business's setting
    assert data["calls_per_second"] == 2
    assert data["eta_seconds"] == 0.5
    assert [t["status"] for t in data["sample"]].count("pending") == 1
    assert _jobs(runtime) == []


def test_business_caps_come_from_the_limits_command(runtime, client, acme, cli):
    business_id, auth = acme
    out = cli(
        "outbound-calls",
        "limits",
        "--business",
        str(business_id),
        "--max-concurrent",
        "3",
        "--max-cps",
        "0.5",
        "--json",
        check=True,
    )
    assert '"max_concurrent": 3' in out.stdout
    data = client.post(URL, json=body(dry_run=True), headers=auth).get_json()
    assert (data["max_concurrent"], data["calls_per_second"]) == (3, 0.5)


def test_202_creates_the_campaign_and_its_job(runtime, client, acme):
    business_id, auth = acme
    add_leads(runtime, business_id, [phone(1)])
    resp = client.post(URL, json=body(name="Spring", max_concurrent=5), headers=auth)
    assert resp.status_code == 202, resp.get_json()
    data = resp.get_json()
    assert data["job_type"] == "enqueue_outbound_calls" and data["status"] == "queued"
    assert resp.headers["Location"] == f"{URL}/{data['campaign_id']}"
    assert _jobs(runtime) == [(business_id, "enqueue_outbound_calls", "calls")]
    got = client.get(f"{URL}/{data['campaign_id']}", headers=auth).get_json()
    assert got["state"] == "running" and got["prepared"] is False
    assert got["name"] == "Spring" and got["max_concurrent"] == 5
    assert got["job"]["status"] == "queued"


def test_pause_resume_cancel_transitions(runtime, client, acme):
    auth = acme[1]
    cid = client.post(URL, json=body(), headers=auth).get_json()["campaign_id"]
    assert client.post(f"{URL}/{cid}/resume", headers=auth).status_code == 409
    assert client.post(f"{URL}/{cid}/pause", headers=auth).get_json()["state"] == "paused"
    assert client.post(f"{URL}/{cid}/pause", headers=auth).status_code == 409
    assert client.post(f"{URL}/{cid}/resume", headers=auth).get_json()["state"] == "running"
    resp = client.post(f"{URL}/{cid}/cancel", headers=auth)
    assert resp.get_json()["state"] == "cancelled"
    again = client.post(f"{URL}/{cid}/cancel", headers=auth)
    assert again.status_code == 409
    assert again.get_json()["details"] == {"id": cid, "state": "cancelled"}


def test_tenant_isolation_on_every_endpoint(runtime, client, acme):
    _, auth = acme
    other_id, other_auth = add_business(runtime, "Other", caller="+12125550177")
    mine = client.post(URL, json=body(), headers=auth).get_json()["campaign_id"]
    theirs = client.post(URL, json=body(caller_id="+12125550177"), headers=other_auth).get_json()[
        "campaign_id"
    ]
    for path in ("", "/pause", "/resume", "/cancel"):
        method = client.get if path == "" else client.post
        resp = method(f"{URL}/{theirs}{path}", headers=auth)
        assert resp.status_code == 404, path
        assert resp.get_json()["error"] == "Not found"
    listed = client.get(URL, headers=auth).get_json()["campaigns"]
    assert [c["id"] for c in listed] == [mine]
    # a lead selection never reaches another business's leads
    add_leads(runtime, other_id, [phone(9)])
    data = client.post(URL, json=body(dry_run=True), headers=auth).get_json()
    assert data["leads"]["total_leads"] == 0
    # and their campaign is untouched by our attempts
    assert client.get(f"{URL}/{theirs}", headers=other_auth).get_json()["state"] == "running"


def test_list_caps_its_limit(client, acme):
    assert client.get(f"{URL}?limit=1000", headers=acme[1]).status_code == 400
    assert client.get(f"{URL}?limit=x", headers=acme[1]).status_code == 400


@pytest.fixture
def redis_away(runtime, env):
    """A test client of the same app with Redis refusing connections (nothing on its port)."""
    from prosaas_core import Runtime, Settings, create_app

    down = Runtime(Settings.from_env({**env, "REDIS_URL": "redis://127.0.0.1:1/0"}), pm=runtime.pm)
    yield create_app(runtime=down).test_client()
    down.close()


def test_redis_down_is_a_short_503_not_a_traceback(client, acme, redis_away, caplog):
    """A campaign's summary reads its live calls from Redis: with Redis away that is a 503
    with the usual small error body and one log line, not a 500 and a traceback per request."""
    auth = acme[1]
    cid = client.post(URL, json=body(), headers=auth).get_json()["campaign_id"]
    resp = redis_away.get(f"{URL}/{cid}", headers=auth)
    assert resp.status_code == 503, resp.get_data(as_text=True)
    assert resp.get_json() == {
        "error": "Service unavailable",
        "details": "a dependency could not be reached; retry later",
    }
    assert "Traceback" not in caplog.text and "Unhandled error" not in caplog.text
    assert f"Redis unavailable on GET {URL}/{cid}" in caplog.text


def test_a_campaign_pauses_while_redis_is_away(client, acme, redis_away):
    """Pausing (the way to stop calls) needs only the database: with Redis away it is done and
    answered, the business's live calls unknown (null), not rolled back behind a 503."""
    auth = acme[1]
    cid = client.post(URL, json=body(), headers=auth).get_json()["campaign_id"]
    resp = redis_away.post(f"{URL}/{cid}/pause", headers=auth)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json()["state"] == "paused"
    assert resp.get_json()["business_live_calls"] is None
    assert client.get(f"{URL}/{cid}", headers=auth).get_json()["state"] == "paused"


@pytest.fixture
def hung_redis_url():
    """A real redis-server on a spare port, stopped (SIGSTOP): it accepts connections and
    never answers, as a hung Redis does."""
    from prosaas_core.testing import free_port, wait_until

    port, workdir = free_port(), tempfile.mkdtemp(prefix="prosaas-hung-redis-")
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        url = f"redis://127.0.0.1:{port}/0"
        wait_until(lambda: _answers(url), 10, "redis-server up")
        proc.send_signal(signal.SIGSTOP)
        yield url
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def test_hung_redis_is_a_503_within_the_push_timeout(runtime, client, acme, env, hung_redis_url):
    """A campaign's summary reads its live calls on the request client: with Redis hung the
    answer is a 503 after PROSAAS_PUSH_TIMEOUT, not after the 10 s a worker's loops wait."""
    from prosaas_core import Runtime, Settings, create_app

    auth = acme[1]
    cid = client.post(URL, json=body(), headers=auth).get_json()["campaign_id"]
    settings = Settings.from_env({**env, "REDIS_URL": hung_redis_url, "PROSAAS_PUSH_TIMEOUT": "1"})
    hung = Runtime(settings, pm=runtime.pm)
    try:
        started = time.monotonic()
        resp = create_app(runtime=hung).test_client().get(f"{URL}/{cid}", headers=auth)
        took = time.monotonic() - started
    finally:
        hung.close()
    assert resp.status_code == 503, resp.get_data(as_text=True)
    assert resp.get_json()["error"] == "Service unavailable"
    assert took < 1.0 + 2.5, took  # one timed-out read, never 10 s
