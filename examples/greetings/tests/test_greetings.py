"""greetings end to end, with nothing but the installed plugin, the public contract and the
testing kit's fixtures (``prosaas_core.testing``, a pytest plugin that comes with prosaas):
``cli`` runs the real console script, ``worker`` a real ``prosaas worker``, ``client`` and
``auth`` are the app and a business's token; PostgreSQL and Redis are real."""

import json

from sqlalchemy import text

from prosaas_core.testing import bearer, business_with_token


def test_greetings_send_runs_end_to_end(cli, runtime, business, worker):
    payload = json.dumps({"name": "Ada", "count": 1200, "batch": 500})
    enq = cli("jobs", "enqueue", "greetings_send", "--business", str(business),
              "--payload", payload, "--json", check=True)  # fmt: skip
    job_id = json.loads(enq.stdout)["id"]

    w = worker("--burst", "--queues", "greetings")
    assert w.wait(120) == 0, w.log()
    assert f"JOB DONE job_id={job_id} job_type=greetings_send" in w.log()

    job = json.loads(cli("jobs", "show", str(job_id), "--json", check=True).stdout)
    assert job["status"] == "succeeded", job["error"]
    assert (job["processed"], job["total"]) == (1200, 1200)
    assert job["result"] == {"written": 1200, "resumed_from": 0}
    with runtime.session() as s:
        rows = s.execute(text("SELECT count(*) FROM greetings WHERE business_id = :b"),
                         {"b": business}).scalar_one()  # fmt: skip
    assert rows == 1200


def test_bad_payload_is_refused_before_anything_is_stored(cli, business):
    bad = cli("jobs", "enqueue", "greetings_send", "--business", str(business),
              "--payload", '{"name": "Ada", "count": 0}')  # fmt: skip
    assert bad.returncode == 1
    assert bad.stderr.strip().endswith("count: Input should be greater than or equal to 1")
    assert json.loads(cli("jobs", "list", "--json", check=True).stdout) == []


def test_blueprint_enqueues_and_lists_only_the_callers_greetings(runtime, client, auth, worker):
    resp = client.post("/api/greetings", json={"name": "Ada", "count": 3}, headers=auth)
    assert resp.status_code == 202, resp.get_json()
    assert resp.headers["Location"] == f"/api/jobs/{resp.get_json()['id']}"
    bad = client.post("/api/greetings", json={"name": "Ada", "count": 3, "x": 1}, headers=auth)
    assert bad.status_code == 400 and bad.get_json()["details"][0]["loc"] == ["x"]
    assert client.post("/api/greetings", json={"name": "Ada", "count": 3}).status_code == 401

    assert worker("--burst", "--queues", "greetings").wait(120) == 0
    assert len(client.get("/api/greetings", headers=auth).get_json()) == 3
    other = bearer(business_with_token(runtime, "Other")[1])
    assert client.get("/api/greetings", headers=other).get_json() == []


def test_the_plugin_is_listed_with_its_version(cli):
    data = json.loads(cli("plugins", "--json", check=True).stdout)
    (mine,) = [p for p in data["plugins"] if p["name"] == "greetings"]
    assert (mine["distribution"], mine["version"]) == ("prosaas-greetings", "0.1.0")
    assert mine["job_types"] == ["greetings_send"] and data["incompatible"] == []
