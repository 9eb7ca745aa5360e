"""The recording-worker service run directly with a ServiceContext, in this process, against
PostgreSQL, Redis and the local Twilio stand-in; and the calls API over what it downloaded."""

from __future__ import annotations

import logging
import re
import threading
import time

import pytest
from prosaas_recordings import service
from prosaas_recordings.slots import SlotManager
from prosaas_recordings.tables import calls, recording_tasks
from prosaas_recordings.testing import call_sid, make_call, recording_sid
from prosaas_recordings.wakeup import ReleaseNotices
from sqlalchemy import select

from prosaas_core import Runtime, ServiceContext, Settings, hookimpl
from prosaas_core.testing import bearer, business_with_token, wait_until

MARKERS = [
    "WORKER_PICKED job_type=download_only",
    "WORKER_SLOT_ACQUIRED",
    "DOWNLOAD_START",
    # the slot is freed when the body is in, before the file is synced, renamed and recorded
    "WORKER_RELEASE_SLOT",
    "RECORDING_SLOT_RELEASED",
    "WORKER_DOWNLOAD_DONE",
]


@pytest.fixture
def run_service(runtime, caplog):
    """Start `service.run(ctx)` in a thread; stopped (and checked to stop promptly) at the end."""
    caplog.set_level(logging.INFO, logger="test.recording-worker")
    running = []

    def _start(rt=None, name="recording-worker"):
        ctx = ServiceContext(
            name,
            threading.Event(),
            rt or runtime,
            logging.getLogger("test.recording-worker"),
        )
        thread = threading.Thread(target=service.run, args=(ctx,), daemon=True)
        thread.start()
        running.append((ctx, thread))
        return ctx, thread

    yield _start
    for ctx, thread in running:
        ctx.stop_event.set()
        thread.join(5)
        assert not thread.is_alive()


def lines(caplog, call: str | None = None) -> list[str]:
    out = [r.getMessage() for r in caplog.records if r.name == "test.recording-worker"]
    return [ln for ln in out if call is None or call in ln]


def task_of(runtime, rec: str):
    with runtime.session() as s:
        return s.execute(
            select(recording_tasks).where(recording_tasks.c.recording_sid == rec)
        ).first()


def recording_state(runtime, sid: str):
    with runtime.session() as s:
        return s.execute(select(calls).where(calls.c.call_sid == sid)).first()


def downloaded(runtime, sid):
    row = recording_state(runtime, sid)
    return row if row.recording_status in ("downloaded", "failed") else None


def test_download_logs_every_marker_in_order_and_the_api_serves_it(
    runtime, app, post_callback, run_service, caplog, stub, recordings_dir
):
    biz, token = business_with_token(runtime, "Owner")
    other, other_token = business_with_token(runtime, "Someone else")
    make_call(runtime, biz, call_sid(1))
    make_call(runtime, biz, call_sid(2))  # a call without a recording
    assert post_callback(biz, call_sid(1), recording_sid(1), duration="9").status_code == 200
    ctx, _ = run_service()
    row = wait_until(lambda: downloaded(runtime, call_sid(1)))

    path = recordings_dir / str(biz) / f"{call_sid(1)}.mp3"
    assert row.recording_status == "downloaded" and row.recording_path == str(path)
    assert path.read_bytes() == stub.content(recording_sid(1))
    assert (row.recording_bytes, row.recording_duration) == (stub.size, 9)
    assert [p.name for p in recordings_dir.rglob("*") if p.is_file()] == [path.name]

    log = lines(caplog, call_sid(1))
    positions = [next(i for i, ln in enumerate(log) if m in ln) for m in MARKERS]
    assert positions == sorted(positions), log
    assert re.search(
        rf"WORKER_PICKED job_type=download_only call_sid={call_sid(1)} business_id={biz} "
        rf"recording_sid={recording_sid(1)} retry=0",
        "\n".join(log),
    )
    assert re.search(rf"DOWNLOAD_START call_sid={call_sid(1)} .*attempt=1", "\n".join(log))
    assert re.search(
        rf"WORKER_DOWNLOAD_DONE call_sid={call_sid(1)} file={call_sid(1)}.mp3 "
        rf"bytes={stub.size} duration_ms=\d+",
        "\n".join(log),
    )
    assert re.search(r"WORKER_RELEASE_SLOT .* reason=success", "\n".join(log))
    assert re.search(r"RECORDING_SLOT_RELEASED .* reason=success active_after=0/3", "\n".join(log))
    all_lines = lines(caplog)
    assert all_lines.index(next(ln for ln in all_lines if "RECORDING WORKER STARTED" in ln)) < (
        all_lines.index("Recording worker loop started")
    )

    client = app.test_client()
    listed = client.get("/api/calls", headers=bearer(token)).get_json()
    by_sid = {c["call_sid"]: c for c in listed["calls"]}
    assert set(by_sid) == {call_sid(1), call_sid(2)}
    rec = by_sid[call_sid(1)]["recording"]
    assert rec["state"] == "downloaded" and rec["bytes"] == stub.size and rec["duration"] == 9
    assert by_sid[call_sid(2)]["recording"]["state"] == "none"
    assert client.get("/api/calls", headers=bearer(other_token)).get_json()["calls"] == []
    assert client.get("/api/calls").status_code == 401

    url = rec["url"]
    full = client.get(url, headers=bearer(token))
    assert full.status_code == 200 and full.mimetype == "audio/mpeg"
    assert full.data == stub.content(recording_sid(1))
    part = client.get(url, headers={**bearer(token), "Range": "bytes=100-199"})
    assert part.status_code == 206 and part.data == stub.content(recording_sid(1))[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{stub.size}"
    assert client.get(url, headers=bearer(other_token)).status_code == 404
    assert (
        client.get(f"/api/calls/{call_sid(2)}/recording", headers=bearer(token)).status_code == 404
    )
    assert client.get("/api/calls/CAnope/recording", headers=bearer(token)).status_code == 404
    assert client.get("/api/calls?limit=0", headers=bearer(token)).status_code == 400


def test_the_next_download_of_a_business_takes_the_released_slot_at_once(
    env, runtime, business, post_callback, run_service, stub
):
    """One slot and a poll longer than the test: each download after the first starts when
    the previous one's body is in, with the slot passed on (no release notice for it), and
    the business never has two downloads at once."""
    one_slot = Runtime(
        Settings.from_env(
            {**env, "RECORDINGS_SLOTS_PER_BUSINESS": "1", "RECORDINGS_POLL_INTERVAL": "30"}
        )
    )
    stub.latency = 0.2
    heard: list[int] = []
    notices = ReleaseNotices(
        runtime.redis, SlotManager(runtime.redis).channel, "test-listener", heard.append
    ).start()
    try:
        time.sleep(0.3)  # subscribed
        for n in range(11, 15):
            make_call(runtime, business, call_sid(n))
            assert post_callback(business, call_sid(n), recording_sid(n)).status_code == 200
        run_service(one_slot)
        wait_until(lambda: all(downloaded(runtime, call_sid(n)) for n in range(11, 15)))
        wait_until(lambda: heard)
        time.sleep(0.3)  # any later notice arrives
    finally:
        notices.stop()
        one_slot.close()
    spans = sorted((start, end) for b, _, start, end in stub.transfers if b == business)
    assert len(spans) == 4 and stub.max_active[business] == 1
    gaps = [nxt[0] - prev[1] for prev, nxt in zip(spans, spans[1:], strict=False)]
    assert max(gaps) < 0.15, gaps  # not the poll (30 s), not the slot retry (0.5 s)
    assert heard == [business]  # only the last release freed the slot


def test_a_worker_with_more_due_work_than_downloads_wakes_the_others_to_claim(
    env, runtime, post_callback, run_service, stub
):
    """Two workers of one download each and a poll longer than the test: the first claims two
    tasks, can start one, and says so; the other claims the rest at once, not in 30 s."""
    one_each = Runtime(
        Settings.from_env(
            {**env, "RECORDINGS_WORKER_THREADS": "1", "RECORDINGS_POLL_INTERVAL": "30"}
        )
    )
    stub.latency = 0.3
    try:
        run_service(one_each, name="recording-worker-b")
        time.sleep(0.5)  # its first claim found nothing: it sleeps for a poll interval
        bizs = [business_with_token(runtime, f"N{i}")[0] for i in range(4)]
        for n, b in enumerate(bizs, start=21):
            make_call(runtime, b, call_sid(n))
            assert post_callback(b, call_sid(n), recording_sid(n)).status_code == 200
        run_service(one_each)
        wait_until(lambda: all(downloaded(runtime, call_sid(n)) for n in range(21, 25)), timeout=5)
    finally:
        one_each.close()
    starts = sorted(t[0] for t in stub.request_times.values() if t)
    assert len(starts) == 4 and starts[1] - starts[0] < 0.25  # two at once: both workers


def test_5xx_then_success_is_retried_with_backoff(
    runtime, business, post_callback, run_service, caplog, stub, recordings_dir
):
    make_call(runtime, business, call_sid(3))
    stub.plan(recording_sid(3), ["500", "503"])
    post_callback(business, call_sid(3), recording_sid(3))
    run_service()
    row = wait_until(lambda: downloaded(runtime, call_sid(3)))
    assert row.recording_status == "downloaded"
    t = stub.request_times[recording_sid(3)]
    assert len(t) == 3
    assert t[1] - t[0] >= 0.18 and t[2] - t[1] >= 0.36  # base 0.2 s, doubling
    assert task_of(runtime, recording_sid(3)).attempts == 3
    assert len([p for p in recordings_dir.rglob("*") if p.is_file()]) == 1
    log = "\n".join(lines(caplog, call_sid(3)))
    assert log.count("DOWNLOAD_FAILED") == 2 and "retry=2" in log
    assert "reason=error" in log and "reason=success" in log


def test_a_server_that_never_answers_ends_in_a_recorded_failure(
    runtime, app, post_callback, run_service, caplog, stub, recordings_dir
):
    biz, token = business_with_token(runtime)
    make_call(runtime, biz, call_sid(4))
    stub.plan(recording_sid(4), ["hang"] * 5)
    post_callback(biz, call_sid(4), recording_sid(4))
    run_service()
    row = wait_until(lambda: downloaded(runtime, call_sid(4)), timeout=30)
    assert row.recording_status == "failed"
    assert "gave up after 3 attempts" in row.recording_error and "timeout" in row.recording_error
    assert stub.requests[recording_sid(4)] == 3
    assert not [p for p in recordings_dir.rglob("*") if p.is_file()]
    [listed] = app.test_client().get("/api/calls", headers=bearer(token)).get_json()["calls"]
    assert listed["recording"]["state"] == "failed"
    assert listed["recording"]["error"] == row.recording_error
    assert listed["recording"]["attempts"] == 3
    assert "RECORDING_FAILED" in "\n".join(lines(caplog, call_sid(4)))


def test_stop_is_prompt_and_hands_the_task_back(
    runtime, business, post_callback, run_service, caplog, stub, recordings_dir
):
    make_call(runtime, business, call_sid(5))
    stub.plan(recording_sid(5), ["drip"])
    post_callback(business, call_sid(5), recording_sid(5))
    ctx, thread = run_service()
    wait_until(lambda: stub.requests[recording_sid(5)])
    time.sleep(0.1)
    started = time.monotonic()
    ctx.stop_event.set()
    thread.join(5)
    assert not thread.is_alive() and time.monotonic() - started < 2.5
    task = task_of(runtime, recording_sid(5))
    assert (task.status, task.attempts, task.lease_until) == ("queued", 0, None)
    assert SlotManager(runtime.redis).active(business) == 0
    assert "reason=shutdown" in "\n".join(lines(caplog, call_sid(5)))
    assert not [p for p in recordings_dir.rglob("*") if p.is_file()]


class Transcriber:
    """An in-test transcription plugin."""

    def __init__(self):
        self.seen = []

    @hookimpl
    def prosaas_transcribe(self, path, call):
        self.seen.append((path.read_bytes()[:4], dict(call)))
        return f"transcript of {call['call_sid']}"


def test_transcription_hook_stores_the_transcript(
    runtime, business, post_callback, run_service, stub
):
    plugin = Transcriber()
    runtime.pm.register(plugin, name="test-transcriber")
    make_call(runtime, business, call_sid(6))
    post_callback(business, call_sid(6), recording_sid(6), duration="5")
    run_service()
    wait_until(lambda: recording_state(runtime, call_sid(6)).transcript)
    assert recording_state(runtime, call_sid(6)).transcript == f"transcript of {call_sid(6)}"
    [(head, call)] = plugin.seen
    assert head == stub.content(recording_sid(6))[:4]
    assert call == {
        "call_sid": call_sid(6),
        "business_id": business,
        "recording_sid": recording_sid(6),
        "duration": 5,
        "bytes": stub.size,
    }


def test_pending_counts_due_tasks(runtime, business, post_callback):
    ctx = ServiceContext("recording-worker", threading.Event(), runtime, logging.getLogger())
    assert service.pending(ctx) == 0
    for n in (7, 8):
        make_call(runtime, business, call_sid(n))
        post_callback(business, call_sid(n), recording_sid(n))
    assert service.pending(ctx) == 2
