"""The embedded default: webhook, service and API on SQLite (no SKIP LOCKED; one process)."""

from __future__ import annotations

import logging
import threading

from prosaas_recordings import service
from prosaas_recordings.tables import calls
from prosaas_recordings.testing import (
    TEST_ACCOUNT_SID,
    TEST_AUTH_TOKEN,
    call_sid,
    make_call,
    recording_sid,
    sign,
)
from sqlalchemy import select

from prosaas_core import Runtime, ServiceContext, Settings, create_app
from prosaas_core.plugins import get_plugin_manager
from prosaas_core.testing import bearer, business_with_token, upgrade, wait_until


def test_download_on_sqlite(env, sqlite_url, stub, recordings_dir):
    rt = Runtime(Settings.from_env({**env, "DATABASE_URL": sqlite_url}), pm=get_plugin_manager())
    upgrade(rt)
    biz, token = business_with_token(rt)
    make_call(rt, biz, call_sid(1))
    params = {
        "AccountSid": TEST_ACCOUNT_SID,
        "CallSid": call_sid(1),
        "RecordingSid": recording_sid(1),
        "RecordingUrl": stub.url(biz, recording_sid(1)),
        "RecordingStatus": "completed",
    }
    url = "http://localhost/webhooks/twilio/recording"
    client = create_app(runtime=rt).test_client()
    headers = {"X-Twilio-Signature": sign(TEST_AUTH_TOKEN, url, params)}
    assert client.post(url, data=params, headers=headers).status_code == 200
    assert client.post(url, data=params, headers=headers).get_json()["status"] == "duplicate"

    ctx = ServiceContext("recording-worker", threading.Event(), rt, logging.getLogger("t"))
    thread = threading.Thread(target=service.run, args=(ctx,), daemon=True)
    thread.start()
    try:

        def status():
            with rt.session() as s:
                return (
                    s.execute(
                        select(calls.c.recording_status).where(calls.c.call_sid == call_sid(1))
                    ).scalar_one()
                    == "downloaded"
                )

        wait_until(status)
    finally:
        ctx.stop_event.set()
        thread.join(5)
    resp = client.get(f"/api/calls/{call_sid(1)}/recording", headers=bearer(token))
    assert resp.status_code == 200 and resp.data == stub.content(recording_sid(1))
    rt.close()
