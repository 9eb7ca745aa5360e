"""User mistakes and an unmigrated database: one-line CLI errors, JSON 503s, start-up errors."""

from __future__ import annotations

import pytest

from prosaas_core import JobType, hookimpl
from prosaas_core.api.app import create_app
from prosaas_core.errors import DuplicateJobTypeError
from prosaas_core.plugins import get_plugin_manager
from prosaas_core.runtime import Runtime
from prosaas_core.settings import Settings


@pytest.mark.parametrize(
    "args",
    [
        ("jobs", "list"),
        ("jobs", "show", "1"),
        ("businesses", "create", "Acme"),
        ("tokens", "revoke", "psk_abcdef"),
    ],
)
def test_cli_on_an_unmigrated_database_says_so_in_one_line(cli, args):
    proc = cli(*args)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert line.startswith("error: database error: ") and "run `prosaas db upgrade`" in line


def test_api_on_an_unmigrated_database_answers_503_migration_required(env, pg_url):
    app = create_app(runtime=Runtime(Settings.from_env(env)))
    resp = app.test_client().get("/api/jobs", headers={"Authorization": "Bearer psk_x"})
    assert resp.status_code == 503
    assert resp.get_json() == {
        "error": "Database migration required",
        "details": "Contact administrator",
    }


def test_duplicate_job_type_fails_create_app_naming_both_plugins(env):
    def make():
        class Plugin:
            @hookimpl
            def prosaas_job_types(self):
                return [JobType("dup_job", lambda ctx: None)]

        return Plugin()

    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(make(), name="first_plugin")
    pm.register(make(), name="second_plugin")
    with pytest.raises(DuplicateJobTypeError) as err:
        create_app(runtime=Runtime(Settings.from_env(env), pm=pm))
    assert "first_plugin" in str(err.value) and "second_plugin" in str(err.value)
