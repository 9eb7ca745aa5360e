"""The leads API through the Flask test client: one lead, CSV imports, listing."""

from __future__ import annotations

import io

import pytest
from sqlalchemy import func, select

from prosaas_core.api.app import create_app
from prosaas_core.models import Lead, LeadImport
from prosaas_core.testing import bearer, business_with_token

CSV = (
    "name,phone,email\n"
    "Bob,+1 415 555 2672,BOB@example.com\n"  # line 2: good
    "Bad phone,12,\n"  # line 3
    "\n"  # line 4: blank, skipped
    '"Multi\nline",(415) 555-2673,\n'  # lines 5-6: good, read in the US region
    "Nobody,,\n"  # line 7: neither phone nor email
    "Eve,,eve@example\n"  # line 8: bad email
    "Ann,,ann@example.com\n"  # line 9: good
)


@pytest.fixture
def client(runtime):
    return create_app(runtime=runtime).test_client()


@pytest.fixture
def h(runtime):
    return bearer(business_with_token(runtime, "A")[1])


def _counts(rt) -> tuple[int, int]:
    with rt.session() as s:
        return (
            s.scalar(select(func.count()).select_from(Lead)),
            s.scalar(select(func.count()).select_from(LeadImport)),
        )


def test_create_one_lead_normalises_the_phone(client, h):
    r = client.post("/api/leads", json={"name": " Ann ", "phone": "(415) 555-2671"}, headers=h)
    assert r.status_code == 201
    lead = r.get_json()
    assert (lead["name"], lead["phone"], lead["status"], lead["source"]) == (
        "Ann",
        "+14155552671",
        "new",
        "api",
    )
    assert r.headers["Location"] == f"/api/leads/{lead['id']}"
    assert client.get(r.headers["Location"], headers=h).get_json() == lead


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "phone": "12"},
        {"name": "x"},
        {"phone": "+14155552671", "email": "nope"},
        {"phone": "+14155552671", "colour": "red"},
        {"phone": 14155552671},
    ],
)
def test_invalid_lead_is_400_and_nothing_is_written(client, runtime, h, body):
    r = client.post("/api/leads", json=body, headers=h)
    assert r.status_code == 400
    assert set(r.get_json()) == {"error", "details"} and r.get_json()["details"]
    assert _counts(runtime) == (0, 0)


def _check_import(client, runtime, h, r, filename):
    assert r.status_code == 201, r.get_json()
    out = r.get_json()
    assert (out["total_rows"], out["imported"], out["failed"]) == (6, 3, 3)
    assert [e["line"] for e in out["errors"]] == [3, 7, 8]
    assert "12" in out["errors"][0]["errors"][0]
    assert r.headers["Location"] == f"/api/leads/imports/{out['import_id']}"
    leads = client.get(f"/api/leads?import_id={out['import_id']}", headers=h).get_json()["items"]
    assert [(x["name"], x["phone"], x["email"]) for x in leads] == [
        ("Ann", None, "ann@example.com"),
        ("Multi\nline", "+14155552673", None),
        ("Bob", "+14155552672", "bob@example.com"),
    ]
    summary = client.get(r.headers["Location"], headers=h).get_json()
    assert (summary["filename"], summary["imported_rows"], summary["failed_rows"]) == (
        filename,
        3,
        3,
    )
    assert [e["line"] for e in summary["errors"]] == [3, 7, 8]


def test_import_csv_body_keeps_good_rows_and_reports_bad_lines(client, runtime, h):
    r = client.post(
        "/api/leads/import?filename=a.csv", data=CSV, content_type="text/csv", headers=h
    )
    _check_import(client, runtime, h, r, "a.csv")


def test_import_multipart_file(client, runtime, h):
    data = {"file": (io.BytesIO(("\ufeff" + CSV).encode()), "leads.csv")}
    r = client.post("/api/leads/import", data=data, headers=h)
    _check_import(client, runtime, h, r, "leads.csv")


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"data": "", "content_type": "text/csv"}, 400),
        ({"data": "first,last\nA,B\n", "content_type": "text/csv"}, 400),
        ({"data": b"name,phone\n\xff\xfe,1\n", "content_type": "text/csv"}, 400),
        ({"data": {"other": (io.BytesIO(b"name,phone\n"), "x.csv")}}, 400),
        ({"data": CSV, "content_type": "application/json"}, 415),
        ({"data": CSV, "content_type": "text/plain"}, 415),
    ],
)
def test_unreadable_imports_are_rejected_whole(client, runtime, h, kwargs, status):
    r = client.post("/api/leads/import", headers=h, **kwargs)
    assert r.status_code == status, r.get_json()
    assert set(r.get_json()) == {"error", "details"}
    assert _counts(runtime) == (0, 0)


def test_import_over_the_body_limit_is_413_and_writes_nothing(env, runtime, h):
    app = create_app({**env, "PROSAAS_MAX_BODY_BYTES": "5000"})
    body = "name,phone\n" + "".join(f"L{i},+1415555{i:04d}\n" for i in range(1000))
    r = app.test_client().post("/api/leads/import", data=body, content_type="text/csv", headers=h)
    assert r.status_code == 413 and r.get_json()["error"] == "Request Entity Too Large"
    assert _counts(runtime) == (0, 0)


class _CountingStream(io.RawIOBase):
    """A request body generated on the fly that records the largest single read."""

    def __init__(self, rows: int) -> None:
        self._rows = iter(range(rows))
        self._buf = b"name,phone,email\n"
        self.max_read = 0
        self.total = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        self.max_read = max(self.max_read, len(b))
        while len(self._buf) < len(b):
            i = next(self._rows, None)
            if i is None:
                break
            self._buf += f"Lead {i},+1212555{i % 10000:04d},l{i}@example.com\n".encode()
        n = min(len(b), len(self._buf))
        b[:n], self._buf = self._buf[:n], self._buf[n:]
        self.total += n
        return n


def test_large_import_is_streamed_in_chunks(client, runtime, h):
    stream = _CountingStream(5_000)
    r = client.post(  # no length: read until the end of the (terminated) input
        "/api/leads/import",
        content_type="text/csv",
        headers=h,
        environ_overrides={"wsgi.input": stream, "wsgi.input_terminated": True},
    )
    assert r.status_code == 201, r.get_json()
    assert r.get_json()["imported"] == 5_000
    assert stream.total > 200_000 and stream.max_read <= 64 * 1024  # never read whole
    assert _counts(runtime) == (5_000, 1)


def test_list_filters_by_status_and_import_and_pages(client, runtime, h):
    client.post("/api/leads/import", data=CSV, content_type="text/csv", headers=h)
    ids = [
        client.post(
            "/api/leads", json={"phone": f"+1415555{i:04d}", "status": s}, headers=h
        ).get_json()["id"]
        for i, s in enumerate(["new", "won", "won"])
    ]
    won = client.get("/api/leads?status=won", headers=h).get_json()
    assert [x["id"] for x in won["items"]] == ids[:0:-1]
    p1 = client.get("/api/leads?limit=4", headers=h).get_json()
    p2 = client.get(f"/api/leads?limit=4&before_id={p1['next_before_id']}", headers=h).get_json()
    all_ids = [x["id"] for x in p1["items"] + p2["items"]]
    assert all_ids == sorted(all_ids, reverse=True) and len(set(all_ids)) == 6
    assert p2["next_before_id"] is None
    assert client.get("/api/leads?limit=500", headers=h).status_code == 400
    assert client.get("/api/leads?import_id=abc", headers=h).status_code == 400
