"""`prosaas plugins [--json]`, and what the CLI does with broken or clashing plugins.

Broken plugins are real distributions: directories with a hand-written ``.dist-info`` (entry
point included) put on PYTHONPATH, so nothing is pip-installed for the test."""

from __future__ import annotations

import json
from importlib.metadata import entry_points
from pathlib import Path

import prosaas_acme

import prosaas_core

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def others() -> list[str]:
    """Every installed prosaas entry point except acme (other teams' plugins come and go)."""
    return sorted(ep.name for ep in entry_points(group="prosaas") if ep.name != "acme")


def test_plugins_json_exact(cli):
    disabled = others()
    proc = cli(
        "plugins", "--json", check=True, extra_env={"PROSAAS_DISABLE_PLUGINS": ",".join(disabled)}
    )
    assert json.loads(proc.stdout) == {
        "prosaas": {"version": prosaas_core.__version__, "contract": prosaas_core.CONTRACT_VERSION},
        "plugins": [
            {
                "name": "acme",
                "distribution": "prosaas-acme-test",
                "version": "1.2.3",
                "job_types": [
                    "acme_count",
                    "acme_echo",
                    "acme_fail",
                    "acme_rate",
                    "acme_sleep",
                    "acme_slot",
                    "acme_unique",
                    "acme_untick",
                ],
                "blueprints": [{"name": "acme", "url_prefix": "/api/acme"}],
                "services": ["acme-ticker"],
                "migrations": [str(Path(prosaas_acme.__file__).parent / "migrations")],
            }
        ],
        "failed": [],
        "incompatible": [],
        "disabled": disabled,
    }


def test_plugins_text_output(cli):
    out = cli("plugins", check=True).stdout
    assert "acme  (prosaas-acme-test 1.2.3)" in out
    assert (
        "  job types:  acme_count, acme_echo, acme_fail, acme_rate, acme_sleep, acme_slot, "
        "acme_unique, acme_untick" in out
    )
    assert "  blueprints: acme (/api/acme)" in out and "  services:   acme-ticker" in out


def test_broken_and_misspelled_plugins_are_reported_not_fatal(cli):
    extra = {"PYTHONPATH": str(FIXTURES / "bad_plugins")}
    proc = cli("plugins", "--json", check=True, extra_env=extra)
    data = json.loads(proc.stdout)
    assert data["failed"] == [
        {
            "name": "broken",
            "reason": "ModuleNotFoundError: No module named 'prosaas_missing_dependency_xyz'",
        },
        {
            "name": "typo",
            "reason": data["failed"][1]["reason"],
        },
    ]
    assert data["failed"][1]["reason"].startswith(
        "PluginValidationError: unknown hook 'prosaas_job_type'"
    )
    assert "acme" in [p["name"] for p in data["plugins"]]
    assert "Plugin 'broken' failed to load and was skipped" in proc.stderr
    # Everything else keeps working; the failures are named in the text listing too.
    text_out = cli("plugins", check=True, extra_env=extra).stdout
    assert "FAILED broken: ModuleNotFoundError" in text_out
    assert "FAILED typo: PluginValidationError: unknown hook 'prosaas_job_type'" in text_out
    up = cli("db", "upgrade", extra_env=extra)
    assert up.returncode == 0, up.stderr
    assert "typo_job" not in up.stderr


def test_duplicate_job_type_names_both_plugins(cli):
    extra = {"PYTHONPATH": str(FIXTURES / "dup_plugin")}
    for args in (("plugins", "--json"), ("db", "upgrade")):
        proc = cli(*args, extra_env=extra)
        assert proc.returncode == 1
        last = proc.stderr.strip().splitlines()[-1]
        assert last == (
            "error: job type 'acme_echo' is claimed by two plugins: 'acme' and 'dup'; "
            "disable one with PROSAAS_DISABLE_PLUGINS"
        )
    # Disabling one of them is the way out.
    ok = cli("plugins", "--json", extra_env={**extra, "PROSAAS_DISABLE_PLUGINS": "dup"})
    assert ok.returncode == 0 and json.loads(ok.stdout)["disabled"] == ["dup"]
