"""End to end with real `prosaas worker` processes: signed webhook in, file out; two workers
sharing the per-business slots; SIGKILL mid-download; a crash restarted; `prosaas doctor`."""

from __future__ import annotations

import re
import time

from prosaas_recordings.slots import SlotManager
from prosaas_recordings.tables import calls
from prosaas_recordings.testing import call_sid, make_call, recording_sid
from sqlalchemy import select, text

from prosaas_core.testing import wait_until

MARKERS = [
    "WORKER_PICKED job_type=download_only",
    "WORKER_SLOT_ACQUIRED",
    "DOWNLOAD_START",
    "WORKER_RELEASE_SLOT",  # when the body is in, before the file is synced and recorded
    "RECORDING_SLOT_RELEASED",
    "WORKER_DOWNLOAD_DONE",
]


def statuses(runtime) -> dict[str, str | None]:
    with runtime.session() as s:
        return dict(s.execute(select(calls.c.call_sid, calls.c.recording_status)).all())


def all_downloaded(runtime, sids) -> bool:
    st = statuses(runtime)
    return all(st.get(sid) == "downloaded" for sid in sids)


def files(root) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_worker_downloads_a_signed_callback_logging_every_marker(
    runtime, env, business, post_callback, workers, cli, stub, recordings_dir
):
    assert "ENABLE_SCHEDULERS" not in env  # the outage: the consumer depended on it
    make_call(runtime, business, call_sid(1))
    assert post_callback(business, call_sid(1), recording_sid(1)).status_code == 200

    doctor = cli("doctor")
    assert doctor.returncode == 1
    assert "service 'recording-worker'" in doctor.stdout and "1 pending" in doctor.stdout

    w = workers()
    w.wait_for_line("WORKER_DOWNLOAD_DONE")
    wait_until(lambda: all_downloaded(runtime, [call_sid(1)]))
    out = w.output
    assert out.index("RECORDING WORKER STARTED") < out.index("Recording worker loop started")
    positions = [out.index(m) for m in MARKERS]
    assert positions == sorted(positions), out
    assert "retry=0" in out and "attempt=1" in out and "active_after=0/3" in out
    assert files(recordings_dir) == [f"{business}/{call_sid(1)}.mp3"]
    assert (recordings_dir / str(business) / f"{call_sid(1)}.mp3").read_bytes() == stub.content(
        recording_sid(1)
    )

    assert w.stop() == 0
    assert "Recording worker loop stopped" in w.output


def test_two_workers_never_exceed_the_per_business_slots(
    runtime, business, post_callback, workers, stub, recordings_dir
):
    from prosaas_core.testing import business_with_token

    bizs = [business] + [business_with_token(runtime, f"B{i}")[0] for i in range(2)]
    stub.latency = 0.25
    extra = {"RECORDINGS_WORKER_THREADS": "4"}  # 2 x 4 threads < 3 businesses x 3 slots
    pair = [workers(extra), workers(extra)]
    for w in pair:
        w.wait_for_line("Recording worker loop started")
    sids = []
    for b in bizs:
        for _ in range(6):
            n = len(sids) + 1
            make_call(runtime, b, call_sid(n))
            assert post_callback(b, call_sid(n), recording_sid(n)).status_code == 200
            sids.append(call_sid(n))
    wait_until(lambda: all_downloaded(runtime, sids), timeout=30)

    assert max(stub.max_active.values()) == 3  # the limit is reached and never passed
    assert set(stub.served.values()) == {1} and len(stub.served) == 18  # each file once
    for w in pair:
        assert "WORKER_DOWNLOAD_DONE" in w.output
    assert len(files(recordings_dir)) == 18
    assert all(SlotManager(runtime.redis).active(b) == 0 for b in bizs)


def test_sigkill_mid_download_another_worker_finishes_it(
    runtime, business, post_callback, workers, stub, recordings_dir
):
    one_slot = {"RECORDINGS_SLOTS_PER_BUSINESS": "1"}
    stub.size = 300_000
    stub.plan(recording_sid(1), ["drip"])  # half the body, then nothing
    make_call(runtime, business, call_sid(1))
    post_callback(business, call_sid(1), recording_sid(1))
    a = workers({**one_slot, "RECORDINGS_READ_TIMEOUT": "60"})
    a.wait_for_line("DOWNLOAD_START")
    wait_until(
        lambda: [p for p in (recordings_dir / ".partial").glob("*.part") if p.stat().st_size]
    )
    a.kill()
    killed_at = time.monotonic()
    assert SlotManager(runtime.redis).active(business) == 1  # the dead worker's slot, for now

    b = workers(one_slot)
    picked = b.wait_for_line(f"WORKER_PICKED job_type=download_only call_sid={call_sid(1)}")
    assert "retry=1" in picked
    assert "active=1/1" in b.wait_for_line("WORKER_SLOT_ACQUIRED")  # the slot came back
    b.wait_for_line("WORKER_DOWNLOAD_DONE")
    assert time.monotonic() - killed_at < 20  # worker start-up + one 1.5 s lease
    wait_until(lambda: all_downloaded(runtime, [call_sid(1)]))
    assert files(recordings_dir) == [f"{business}/{call_sid(1)}.mp3"]  # no partial file left
    path = recordings_dir / str(business) / f"{call_sid(1)}.mp3"
    assert path.read_bytes() == stub.content(recording_sid(1))
    wait_until(lambda: SlotManager(runtime.redis).active(business) == 0)


def test_a_crashing_service_is_restarted(
    runtime, env, business, post_callback, workers, stub, recordings_dir
):
    with runtime.engine.begin() as conn:  # a real fault: the service's table is gone
        conn.execute(text("ALTER TABLE recording_tasks RENAME TO recording_tasks_away"))
    w = workers({"ENABLE_SCHEDULERS": "0"})
    w.wait_for_line("SERVICE CRASHED recording-worker")
    with runtime.engine.begin() as conn:
        conn.execute(text("ALTER TABLE recording_tasks_away RENAME TO recording_tasks"))
    make_call(runtime, business, call_sid(1))
    post_callback(business, call_sid(1), recording_sid(1))
    w.wait_for_line("WORKER_DOWNLOAD_DONE")
    wait_until(lambda: all_downloaded(runtime, [call_sid(1)]))
    assert len(re.findall("RECORDING WORKER STARTED", w.output)) >= 2
    assert "UndefinedTable" in w.output or "does not exist" in w.output
