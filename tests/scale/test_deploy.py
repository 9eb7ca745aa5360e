"""deploy/Procfile under honcho (a Procfile process manager from PyPI): the web role migrates
(RUN_MIGRATIONS=1, the only role that does), the worker role runs the job the API accepted,
and one SIGTERM to honcho stops both roles gracefully."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, inspect
from sqlalchemy.pool import NullPool

from prosaas_core.plugins import get_plugin_manager
from prosaas_core.runtime import Runtime
from prosaas_core.settings import Settings
from prosaas_core.testing import bearer, business_with_token, free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, "honcho exited early"
        try:
            if requests.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url}/readyz never answered 200")


@pytest.mark.slow
def test_the_procfile_runs_web_and_worker_and_stops_on_one_sigterm(env, pg_url, tmp_path):
    port = free_port()
    run_env = {**env, "PATH": f"{BIN}:{os.environ['PATH']}", "WEB_CONCURRENCY": "1"}
    log = open(tmp_path / "honcho.log", "w+")  # noqa: SIM115
    proc = subprocess.Popen(
        [str(BIN / "honcho"), "-f", str(ROOT / "deploy/Procfile"), "-d", str(ROOT),
         "start", "-p", str(port)],
        env=run_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, proc, 120)  # ready means migrated: nobody else ran an upgrade
        assert (
            "background_jobs"
            in inspect(create_engine(pg_url, poolclass=NullPool)).get_table_names()
        )

        rt = Runtime(Settings.from_env(env), pm=get_plugin_manager(load_entrypoints=True))
        _, token = business_with_token(rt, "Procfile")
        rt.close()
        h = bearer(token)
        r = requests.post(
            url + "/api/jobs",
            json={"job_type": "acme_echo", "payload": {"message": "hi"}},
            headers=h,
        )
        assert r.status_code == 202, r.text
        end = time.monotonic() + 60
        while requests.get(url + r.headers["Location"], headers=h).json()["status"] != "succeeded":
            assert time.monotonic() < end, "the worker role never ran the job"
            time.sleep(0.2)

        proc.send_signal(signal.SIGTERM)
        proc.wait(60)  # PROSAAS_SHUTDOWN_TIMEOUT (30 s) and gunicorn's grace, with margin
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    log.seek(0)
    out = log.read()
    assert "MIGRATION CHECKPOINT: RUN_MIGRATIONS=1" in out
    assert out.count("MIGRATION CHECKPOINT") == 1  # the web role only
    assert "WORKER STOPPED" in out, out[-3000:]
