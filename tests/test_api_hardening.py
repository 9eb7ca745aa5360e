"""Hostile bodies against a real `prosaas serve`: every list and string is capped, a 400 lists at
most 20 errors, deep or NUL-carrying JSON is a 400, ids and dates out of the database's range
are refused at the API (not failed jobs)."""

from __future__ import annotations

import json
import time

import pytest
import requests

from prosaas_core.testing import ServeProcess, bearer, business_with_token

#: the promise: the answer to any body up to 16 MB is small, and quick
MAX_ANSWER = 64 * 1024


@pytest.fixture
def served(env, runtime, tmp_path):
    _, token = business_with_token(runtime, "A")
    with ServeProcess(env, workers=1, log_path=tmp_path / "serve.log") as srv:
        yield srv.url, {**bearer(token), "Content-Type": "application/json"}


def _post(url: str, headers: dict, body: bytes | str) -> requests.Response:
    # what parsing this body costs on this machine right now: the server may take a few
    # times that (parse, validate, answer), not the 27 s a 4 MB body took before the caps
    t0 = time.monotonic()
    try:
        json.loads(body)
    except (ValueError, RecursionError):
        pass
    parse = time.monotonic() - t0
    t0 = time.monotonic()
    r = requests.post(url, data=body, headers=headers, timeout=120)
    elapsed = time.monotonic() - t0
    assert len(r.content) < MAX_ANSWER, (len(r.content), r.content[:300])
    assert elapsed < 5 + 8 * parse, (elapsed, parse)
    return r


def _bad(r: requests.Response, status: int = 400) -> dict:
    assert r.status_code == status, r.text[:500]
    body = r.json()
    assert set(body) == {"error", "details"}
    return body


def _big_list(item: str, megabytes: int = 12) -> str:
    return "[" + ",".join([item] * (megabytes * 1024 * 1024 // (len(item) + 1))) + "]"


def _with(template: str, filler: str) -> str:
    return template.replace("<LIST>", filler)


BIG_BODIES = {
    "lead tags": ("/api/leads", _with('{"email": "a@b.co", "tags": <LIST>}', _big_list('"t"'))),
    "bulk-update tags": (
        "/api/leads/bulk-update",
        _with('{"all": true, "set": {"tags": <LIST>}}', _big_list('"t"')),
    ),
    "bulk-delete ids": ("/api/leads/bulk-delete", _with('{"lead_ids": <LIST>}', _big_list("1"))),
    "filter statuses": (
        "/api/jobs",
        _with(
            '{"job_type": "delete_leads", "payload": {"filter": {"status": <LIST>}}}',
            _big_list('"x"'),
        ),
    ),
    "many extra keys": (
        "/api/leads",
        json.dumps({f"k{i}": i for i in range(500_000)}),
    ),
    "many bad ids": ("/api/leads/bulk-delete", _with('{"lead_ids": <LIST>}', _big_list('"x"', 1))),
}


@pytest.mark.parametrize("name", list(BIG_BODIES))
def test_big_bodies_get_small_quick_400s(served, name):
    url, h = served
    path, body = BIG_BODIES[name]
    assert len(body) <= 16 * 1024 * 1024
    details = _bad(_post(url + path, h, body))["details"]
    # field errors (at most 20 and a count), or one line for JSON refused whole
    assert isinstance(details, str) or (isinstance(details, list) and len(details) <= 21)


def test_error_list_is_truncated_with_a_count(served):
    url, h = served
    details = _bad(_post(url + "/api/leads", h, json.dumps({f"k{i}": i for i in range(1000)})))[
        "details"
    ]
    assert len(details) == 21
    assert details[-1]["type"] == "too_many_errors"
    assert "980 more" in details[-1]["msg"]


def test_deep_json_and_nul_bytes_are_400(served):
    url, h = served
    deep = "[" * 100_000 + "]" * 100_000
    _bad(_post(url + "/api/jobs", h, deep))
    _bad(_post(url + "/api/leads", h, '{"email": "a@b.co", "tags": ' + "[" * 40 + "]" * 40 + "}"))
    _bad(_post(url + "/api/leads", h, json.dumps({"name": "a\x00b", "email": "a@b.co"})))
    _bad(_post(url + "/api/leads", h, json.dumps({"email": "a@b.co", "notes": "x\x00"})))
    _bad(requests.get(url + "/api/leads?status=a%00b", headers=h, timeout=10))
    _bad(requests.get(url + "/api/leads%00x", headers=h, timeout=10))  # in the path
    # a NUL in a CSV row is that row's error, the others are imported
    r = requests.post(
        url + "/api/leads/import",
        data="name,email\nok,ok@b.co\nbad\x00,bad@b.co\n",
        headers={**h, "Content-Type": "text/csv"},
        timeout=10,
    )
    assert r.status_code == 201, r.text
    assert (r.json()["imported"], r.json()["failed"]) == (1, 1)


@pytest.mark.parametrize(
    "payload",
    [
        {"lead_ids": [99999999999999999999999]},
        {"lead_ids": [2**63]},
        {"filter": {"import_id": 2**63}},
        {"filter": {"created_before": "9999-12-31T23:00:00-05:00"}},
        {"filter": {"created_after": "0001-01-01T00:30:00+05:00"}},
        {"filter": {"status": "x" * 33}},
    ],
)
def test_out_of_range_values_are_400_not_failed_jobs(served, payload):
    url, h = served
    _bad(_post(url + "/api/jobs", h, json.dumps({"job_type": "delete_leads", "payload": payload})))
    _bad(_post(url + "/api/leads/bulk-delete", h, json.dumps(payload)))
    _bad(_post(url + "/api/leads/bulk-update", h, json.dumps({**payload, "set": {"owner": "x"}})))
    assert requests.get(url + "/api/jobs", headers=h, timeout=10).json()["items"] == []


def test_csv_import_row_cap_refuses_the_whole_file(env, runtime, tmp_path):
    _, token = business_with_token(runtime, "A")
    capped = {**env, "PROSAAS_IMPORT_MAX_ROWS": "100"}
    with ServeProcess(capped, workers=1, log_path=tmp_path / "serve.log") as srv:
        h = {**bearer(token), "Content-Type": "text/csv"}
        body = "name,email\n" + "".join(f"L{i},l{i}@example.com\n" for i in range(101))
        r = requests.post(srv.url + "/api/leads/import", data=body, headers=h, timeout=30)
        _bad(r, 413)
        assert "more than 100 rows" in r.json()["details"]
        leads = requests.get(srv.url + "/api/leads", headers=bearer(token), timeout=10).json()
        assert leads["items"] == []  # rolled back whole
        ok = body.rsplit("L100,", 1)[0]
        r = requests.post(srv.url + "/api/leads/import", data=ok, headers=h, timeout=30)
        assert r.status_code == 201 and r.json()["imported"] == 100
