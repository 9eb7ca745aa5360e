"""Retention and history through the CLI, the core schedule and a real worker (small data;
the 1,000,000-row plans and pruning are in test_history_scale.py)."""

from __future__ import annotations

import json
import threading
import time

from sqlalchemy import text

from prosaas_core.jobs import housekeeping
from prosaas_core.models import ScheduleRun

OLD_ROWS = """
INSERT INTO background_jobs (business_id, job_type, status, payload, started_at, finished_at)
VALUES
 (:b, 'acme_echo', 'succeeded', '{}', :t - interval '10 days' - interval '3 seconds',
  :t - interval '10 days'),
 (:b, 'acme_echo', 'failed', '{}', :t - interval '10 days', :t - interval '10 days'),
 (:b, 'acme_sleep', 'succeeded', '{}', :t - interval '10 days', :t - interval '10 days'),
 (:b, 'acme_echo', 'succeeded', '{}', :t - interval '1 day', :t - interval '1 day'),
 (:b, 'acme_echo', 'queued', '{"message": "retried"}', NULL, :t - interval '40 days')
"""


def _ago(modifiers: str) -> str:
    return f"strftime('%Y-%m-%d %H:%M:%S.000000', 'now', '{modifiers}')"


def _old_rows(runtime, business) -> None:
    sql = OLD_ROWS.replace(":t", "now()") if runtime.engine.dialect.name == "postgresql" else (
        # SQLAlchemy's own format for SQLite datetimes: they compare as text
        OLD_ROWS.replace(
            ":t - interval '10 days' - interval '3 seconds'", _ago("-10 days', '-3 seconds")
        )
        .replace(":t - interval '10 days'", _ago("-10 days"))
        .replace(":t - interval '1 day'", _ago("-1 day"))
        .replace(":t - interval '40 days'", _ago("-40 days"))
    )  # fmt: skip
    with runtime.engine.begin() as conn:
        conn.execute(text(sql), {"b": business})


def _left(runtime) -> list[tuple[str, str]]:
    with runtime.engine.connect() as conn:
        return sorted(conn.execute(text("SELECT job_type, status FROM background_jobs")).all())


RETENTION = {
    "PROSAAS_RETENTION_SUCCEEDED_DAYS": "7",
    "PROSAAS_RETENTION_FAILED_DAYS": "30",
    "PROSAAS_RETENTION_OVERRIDES": "acme_sleep=never",
}


def test_prune_cli_dry_run_then_prune_keeps_history_in_stats(cli, runtime, business):
    _old_rows(runtime, business)
    dry = cli("jobs", "prune", "--dry-run", "--json", extra_env=RETENTION, check=True)
    out = json.loads(dry.stdout)
    assert out["dry_run"] and out["deleted"] == {"acme_echo.succeeded": 1}
    assert len(_left(runtime)) == 5  # a dry run changes nothing
    text_out = cli("jobs", "prune", extra_env=RETENTION, check=True).stdout
    assert "deleted          1  acme_echo.succeeded" in text_out
    assert "retention acme_sleep.succeeded" in text_out and "for ever" in text_out
    # only the succeeded acme_echo row past 7 days went; failed (30 days), the override
    # (never), the young one and the active one (an old finished_at) stay
    assert _left(runtime) == [("acme_echo", "failed"), ("acme_echo", "queued"),
                              ("acme_echo", "succeeded"), ("acme_sleep", "succeeded")]  # fmt: skip
    stats = json.loads(cli("jobs", "stats", "--json", extra_env=RETENTION, check=True).stdout)
    got = {(r["job_type"], r["status"]): r["jobs"] for r in stats}
    assert got == {("acme_echo", "succeeded"): 2, ("acme_echo", "failed"): 1,
                   ("acme_sleep", "succeeded"): 1}  # fmt: skip
    assert [r["avg_seconds"] for r in stats if r["job_type"] == "acme_echo"
            and r["status"] == "succeeded"] == [1.5]  # fmt: skip
    scoped = cli("jobs", "stats", "--business", str(business + 1000), "--json", check=True)
    assert json.loads(scoped.stdout) == []


def test_bad_retention_settings_are_one_line_errors(cli):
    for key, value in (
        ("PROSAAS_RETENTION_OVERRIDES", "acme_echo.done=3"),
        ("PROSAAS_RETENTION_OVERRIDES", "acme_echo"),
        ("PROSAAS_RETENTION_FAILED_DAYS", "-1"),
        ("PROSAAS_RETENTION_SUCCEEDED_DAYS", "week"),
    ):
        res = cli("jobs", "prune", "--dry-run", extra_env={key: value})
        assert res.returncode != 0, (key, value)
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and key in lines[0], res.stderr
        assert "Traceback" not in res.stderr


def test_sqlite_migrates_and_prunes(sqlite_url, cli, tmp_path):
    env = {"DATABASE_URL": sqlite_url, **RETENTION}
    cli("db", "upgrade", extra_env=env, check=True)
    bid = json.loads(cli("businesses", "create", "S", "--json", extra_env=env, check=True).stdout)
    from prosaas_core.plugins import get_plugin_manager
    from prosaas_core.runtime import Runtime
    from prosaas_core.settings import Settings

    rt = Runtime(Settings.from_env({"DATABASE_URL": sqlite_url}), pm=get_plugin_manager())
    try:
        _old_rows(rt, bid["id"])
        out = json.loads(cli("jobs", "prune", "--json", extra_env=env, check=True).stdout)
        assert out["deleted"] == {"acme_echo.succeeded": 1}, out
        assert len(_left(rt)) == 4
        stats = json.loads(cli("jobs", "stats", "--json", extra_env=env, check=True).stdout)
        assert sum(r["jobs"] for r in stats) == 4
    finally:
        rt.close()


def test_the_history_task_runs_once_per_occurrence_across_workers(runtime, cli):
    occurrences = []

    def worker(name: str) -> None:
        occurrences.append(housekeeping.claim(runtime, name))

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = [o for o in occurrences if o is not None]
    assert len(won) == 1, occurrences
    assert housekeeping.claim(runtime, "late") is None  # that occurrence is done
    with runtime.engine.connect() as conn:
        assert conn.execute(text(f"SELECT count(*) FROM {ScheduleRun.__tablename__}")).scalar() == 1
    listed = json.loads(cli("schedules", "list", "--json", check=True).stdout)
    core = [s for s in listed if s["name"] == "prosaas-history"]
    assert core and core[0]["source"] == "core" and core[0]["problem"] is None
    res = cli("schedules", "remove", "prosaas-history")
    assert res.returncode != 0 and "pause it instead" in res.stderr
    cli("schedules", "pause", "prosaas-history", check=True)
    later = won[0].replace(year=won[0].year + 1)
    assert housekeeping.claim(runtime, "w0", now=later) is None  # paused: nothing runs


def test_a_worker_prunes_by_itself_and_metrics_keep_the_history(
    runtime, business, start_worker, cli
):
    from prosaas_core.api.app import create_app

    _old_rows(runtime, business)
    w = start_worker(
        extra_env={**RETENTION, "PROSAAS_HISTORY_CRON": "* * * * * */2",
                   "PROSAAS_SCHEDULE_TICK": "0.2"}
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while len(_left(runtime)) == 5:
        assert time.monotonic() < deadline, w.log_text() if hasattr(w, "log_text") else ""
        time.sleep(0.2)
    assert len(_left(runtime)) == 4
    while ("acme_echo", "queued") in _left(runtime):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    body = create_app(runtime=runtime).test_client().get("/metrics").get_data(as_text=True)
    # the retried (queued) job ran meanwhile: 3 acme_echo successes, 4 runs in the histogram
    assert 'prosaas_jobs_finished_total{job_type="acme_echo",status="succeeded"} 3.0' in body
    assert 'prosaas_jobs_finished_total{job_type="acme_echo",status="failed"} 1.0' in body
    assert 'prosaas_job_duration_seconds_count{job_type="acme_echo"} 4.0' in body
    assert 'prosaas_job_duration_seconds_bucket{job_type="acme_echo",le="2.5"} 3.0' in body
    assert 'prosaas_job_duration_seconds_bucket{job_type="acme_echo",le="5.0"} 4.0' in body
