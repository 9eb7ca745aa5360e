"""`prosaas db check|sql|history` and the real pip-installed acme plugin."""

from __future__ import annotations

import json
import re

from sqlalchemy import create_engine, inspect, text

from prosaas_core.runtime import Runtime
from prosaas_core.settings import Settings

ACME_TYPES = sorted(
    [
        "acme_count",
        "acme_echo",
        "acme_fail",
        "acme_rate",
        "acme_sleep",
        "acme_slot",
        "acme_unique",
        "acme_untick",
    ]
)


def allowed_def(pg_url: str) -> str:
    engine = create_engine(pg_url)
    with engine.connect() as conn:
        (definition,) = conn.execute(
            text(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'chk_job_type'"
            )
        ).one()
    engine.dispose()
    return definition


def test_check_exit_codes_with_the_installed_acme_plugin(cli, pg_url):
    fresh = cli("db", "check")
    assert fresh.returncode == 1
    # the message names each branch's head revision
    assert re.search(r"schema revision \w+ \(branch prosaas_core\) is not applied", fresh.stdout)
    assert "schema revision a002_acme_runs (branch acme) is not applied" in fresh.stdout

    cli("db", "upgrade", check=True, extra_env={"PROSAAS_DISABLE_PLUGINS": "acme"})
    assert cli("db", "check", extra_env={"PROSAAS_DISABLE_PLUGINS": "acme"}).returncode == 0
    drift = cli("db", "check")
    assert drift.returncode == 1
    lines = drift.stdout.splitlines()
    assert (
        lines[0]
        == "schema revision a002_acme_runs (branch acme) is not applied: run `prosaas db upgrade`"
    )
    assert lines[1:] == [
        f"job type '{t}' is installed but not allowed by chk_job_type: run `prosaas db upgrade`"
        for t in ACME_TYPES
    ]
    assert "'acme_echo'" not in allowed_def(pg_url)

    up = cli("db", "upgrade", check=True)
    assert "Acquired migration lock" in up.stderr and "Released migration lock" in up.stderr
    assert "Migration 2: updating background_jobs job_type constraint" in up.stderr
    assert "Migration 2 complete: job_type constraint updated" in up.stderr
    assert any(
        ln.endswith(
            "Allowed job types: " + ", ".join(sorted(set(ACME_TYPES) | set(_installed_others(cli))))
        )
        for ln in up.stderr.splitlines()
    )
    ok = cli("db", "check")
    assert ok.returncode == 0 and ok.stdout.startswith("ok:")
    definition = allowed_def(pg_url)
    assert all(f"'{t}'" in definition for t in ACME_TYPES)


def _installed_others(cli) -> list[str]:
    reg = Runtime(Settings.from_env({})).registry
    return [t for t, owner in reg.job_type_owner.items() if owner != "acme"]


def test_sql_prints_the_plan_and_runs_nothing(cli, pg_url):
    cli("db", "upgrade", check=True, extra_env={"PROSAAS_DISABLE_PLUGINS": "acme"})
    out = cli("db", "sql", check=True).stdout
    assert "CREATE TABLE acme_ticks" in out
    assert "-- Migration 2: updating background_jobs job_type constraint" in out
    assert "ADD CONSTRAINT chk_job_type CHECK (job_type IN (" in out and "NOT VALID;" in out
    assert "ALTER TABLE background_jobs VALIDATE CONSTRAINT chk_job_type;" in out
    engine = create_engine(pg_url)
    assert not inspect(engine).has_table("acme_ticks")
    engine.dispose()
    assert cli("db", "check").returncode == 1
    assert len(json.loads(cli("db", "history", "--json", check=True).stdout)) == 1
    cli("db", "upgrade", check=True)
    assert "-- chk_job_type is up to date" in cli("db", "sql", check=True).stdout


def test_history_lists_numbered_migrations(cli):
    assert "no chk_job_type migration yet" in cli("db", "history", check=True).stdout
    cli("db", "upgrade", check=True, extra_env={"PROSAAS_DISABLE_PLUGINS": "acme"})
    cli("db", "upgrade", check=True)
    rows = json.loads(cli("db", "history", "--json", check=True).stdout)
    assert [r["number"] for r in rows] == [1, 2]
    assert rows[1]["added"] == ACME_TYPES and rows[1]["removed"] == []
    assert set(rows[1]) >= {
        "number",
        "applied_at",
        "allowed",
        "added",
        "removed",
        "sql",
        "host",
        "pid",
    }
    text_out = cli("db", "history", check=True).stdout.splitlines()
    assert text_out[1].startswith("Migration 2 ") and "added: acme_count" in text_out[1]


def test_bad_options_are_one_line_errors(cli):
    proc = cli("db", "upgrade", "--lock-wait", "-1")
    assert proc.returncode == 2 and "--lock-wait" in proc.stderr
