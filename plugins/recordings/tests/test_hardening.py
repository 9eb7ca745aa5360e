"""Recordings hardening: files private whatever the umask, the calls query scoped on both
tables, GET /api/calls parameters validated."""

from __future__ import annotations

import os
import stat

import pytest
from prosaas_recordings.download import Limits, fetch
from prosaas_recordings.tables import calls
from prosaas_recordings.testing import call_sid, make_call, recording_sid
from sqlalchemy import update

from prosaas_core.testing import bearer, business_with_token


@pytest.mark.parametrize("umask", [0o000, 0o077])
def test_recording_files_0640_in_0750_dirs_whatever_the_umask(stub, tmp_path, umask):
    lim = Limits(allowed_hosts=frozenset({stub.host}), allow_http=True)
    root = tmp_path / "recordings"
    old = os.umask(umask)
    try:
        fetch(
            stub.url(1, recording_sid(1)) + ".mp3",
            root / "1" / f"{call_sid(1)}.mp3",
            tmp=root / ".partial" / "t.part",
            auth=(stub.account_sid, stub.auth_token),
            limits=lim,
        )
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(root / "1" / f"{call_sid(1)}.mp3") == 0o640
    for d in (root, root / "1", root / ".partial"):
        assert mode(d) == 0o750, d


def test_calls_list_joins_tasks_of_the_same_business_only(runtime, post_callback, client):
    a, token_a = business_with_token(runtime, "A")
    b, token_b = business_with_token(runtime, "B")
    make_call(runtime, a, call_sid(1))
    make_call(runtime, b, call_sid(2))
    assert post_callback(a, call_sid(1), recording_sid(1)).get_json()["status"] == "queued"
    # B's call claims A's recording SID (as a forged or mistaken status callback could)
    with runtime.session() as s:
        s.execute(
            update(calls)
            .where(calls.c.call_sid == call_sid(2))
            .values(recording_sid=recording_sid(1))
        )
    mine = client.get("/api/calls", headers=bearer(token_a)).get_json()["calls"]
    assert mine[0]["recording"]["state"] == "queued"
    theirs = client.get("/api/calls", headers=bearer(token_b)).get_json()["calls"]
    assert [c["call_sid"] for c in theirs] == [call_sid(2)]
    assert theirs[0]["recording"]["state"] == "none"
    one = client.get(f"/api/calls/{call_sid(2)}", headers=bearer(token_b)).get_json()
    assert one["recording"]["state"] == "none"


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=501", "limit=x", "before=0", "before=99999999999999999999", "y=1"]
)
def test_calls_list_parameters_are_validated(runtime, client, query):
    _, token = business_with_token(runtime, "A")
    r = client.get(f"/api/calls?{query}", headers=bearer(token))
    assert r.status_code == 400, r.get_data(as_text=True)
    assert set(r.get_json()) == {"error", "details"}
