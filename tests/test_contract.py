"""The versioned plugin contract: a plugin needing another contract or core version is not
loaded, is listed as incompatible with the reason and logged once, and nothing else breaks
(worker, API, ``db upgrade`` keeps its rows' job type allowed).

The plugins are real distributions written into the test's directory (a module and a
hand-written ``.dist-info`` with its entry point and ``Requires-Dist``) and put on PYTHONPATH.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

import prosaas_core
from prosaas_core.testing import bearer, business_with_token


@pytest.fixture(autouse=True)
def _forget_the_plugin_module():
    """Each test imports its own version of the plugin in-process."""
    sys.modules.pop("prosaas_future_test", None)
    yield
    sys.modules.pop("prosaas_future_test", None)


def write_plugin(root: Path, *, contract: str | None, requires: str = "prosaas") -> Path:
    """Plugin ``future`` (distribution prosaas-future-test 0.1) with job type ``future_job``."""
    pkg = root / "prosaas_future_test"
    pkg.mkdir(parents=True, exist_ok=True)
    declared = f"PROSAAS_CONTRACT = {contract!r}\n" if contract else ""
    (pkg / "__init__.py").write_text(
        "from prosaas_core import JobType, hookimpl\n"
        + declared
        + "\n\n@hookimpl\ndef prosaas_job_types():\n"
        "    return [JobType('future_job', lambda ctx: {'ran': True})]\n"
    )
    info = root / "prosaas_future_test-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: prosaas-future-test\nVersion: 0.1\n"
        f"Requires-Dist: {requires}\n"
    )
    (info / "entry_points.txt").write_text("[prosaas]\nfuture = prosaas_future_test\n")
    return root


REASON = (
    f"needs plugin contract <3,>=2, but prosaas {prosaas_core.__version__} provides contract "
    f"{prosaas_core.CONTRACT_VERSION}"
)
LOGGED = "Plugin 'future' is incompatible and was not loaded"


def test_a_plugin_needing_a_newer_contract_is_not_loaded_and_nothing_else_breaks(
    cli, env, tmp_path, start_worker, monkeypatch, caplog
):
    # Installed while it fitted: the constraint allows its type and a row uses it.
    plugins = write_plugin(tmp_path / "v1", contract=">=1,<2")
    extra = {"PYTHONPATH": str(plugins)}
    cli("db", "upgrade", check=True, extra_env=extra)
    bid = json.loads(cli("businesses", "create", "A", "--json", check=True).stdout)["id"]
    args = ("jobs", "enqueue", "future_job", "--business", str(bid), "--payload", "{}", "--json")
    cli(*args, check=True, extra_env=extra)

    # The next release of the plugin needs contract 2: this core provides 1.
    plugins = write_plugin(tmp_path / "v2", contract=">=2,<3")
    extra = {"PYTHONPATH": str(plugins)}
    listed = cli("plugins", "--json", check=True, extra_env=extra)
    data = json.loads(listed.stdout)
    assert data["incompatible"] == [
        {
            "name": "future",
            "distribution": "prosaas-future-test",
            "version": "0.1",
            "reason": REASON,
        }
    ]
    assert "future" not in [p["name"] for p in data["plugins"]] and data["failed"] == []
    assert listed.stderr.count(LOGGED) == 1
    text_out = cli("plugins", check=True, extra_env=extra).stdout
    assert f"INCOMPATIBLE future (prosaas-future-test 0.1): {REASON}" in text_out
    version = cli("--version", check=True, extra_env=extra).stdout
    assert version.startswith(
        f"prosaas {prosaas_core.__version__} (plugin contract {prosaas_core.CONTRACT_VERSION})\n"
    )
    assert "  acme 1.2.3\n" in version and f"future 0.1 INCOMPATIBLE: {REASON}" in version

    # db upgrade works and keeps the type its rows use allowed; no row is touched.
    up = cli("db", "upgrade", extra_env=extra)
    assert up.returncode == 0, up.stderr
    assert up.stderr.count(LOGGED) == 1
    engine = create_engine(env["DATABASE_URL"])
    with engine.connect() as c:
        assert c.execute(text("SELECT count(*) FROM background_jobs")).scalar_one() == 1
        c.execute(
            text(
                "INSERT INTO background_jobs (business_id, job_type, queue, status, payload, "
                "max_attempts) VALUES (:b, 'future_job', 'default', 'queued', '{}', 3)"
            ),
            {"b": bid},
        )  # the constraint still allows it
        c.rollback()
    engine.dispose()
    assert cli("db", "check", extra_env=extra).returncode == 0

    # The worker runs every other plugin's jobs and logs the incompatible one once.
    out = cli("jobs", "enqueue", "acme_echo", "--business", str(bid), "--payload",
              '{"message": "hi"}', "--json", check=True, extra_env=extra)  # fmt: skip
    job = json.loads(out.stdout)["id"]
    w = start_worker("--burst", extra_env={**extra, "PROSAAS_DISABLE_SERVICES": "acme-ticker"})
    assert w.wait(120) == 0, w.log()
    assert w.log().count(LOGGED) == 1
    shown = json.loads(cli("jobs", "show", str(job), "--json", check=True).stdout)
    assert shown["status"] == "succeeded"

    # The API serves the rest, refuses the type, and tells operators why in /readyz.
    from prosaas_core import create_app
    from prosaas_core.plugins import get_plugin_manager
    from prosaas_core.runtime import Runtime
    from prosaas_core.settings import Settings

    monkeypatch.syspath_prepend(str(plugins))
    rt = Runtime(Settings.from_env(env), pm=get_plugin_manager())
    client = create_app(runtime=rt).test_client()
    ready = client.get("/readyz").get_json()  # the test client comes from 127.0.0.1: operator
    assert ready["status"] == "ready"
    assert ready["versions"]["incompatible"] == {"future": REASON}
    assert ready["versions"]["plugins"]["acme"] == "1.2.3"
    auth = bearer(business_with_token(rt, "B")[1])
    refused = client.post("/api/jobs", json={"job_type": "future_job", "payload": {}}, headers=auth)
    assert refused.status_code == 400 and "unknown job type 'future_job'" in str(refused.get_json())
    accepted = client.post(
        "/api/jobs", json={"job_type": "acme_echo", "payload": {"message": "x"}}, headers=auth
    )
    assert accepted.status_code == 202, accepted.get_json()
    assert [r.getMessage() for r in caplog.records].count(f"{LOGGED}: {REASON}") == 1
    rt.close()


def test_a_plugin_requiring_another_core_is_not_even_imported(cli, tmp_path):
    plugins = write_plugin(tmp_path, contract=None, requires="prosaas>=99,<100")
    # Importing it would fail loudly: the requirement is checked from its metadata first.
    (plugins / "prosaas_future_test" / "__init__.py").write_text("raise RuntimeError('imported')\n")
    data = json.loads(
        cli("plugins", "--json", check=True, extra_env={"PYTHONPATH": str(plugins)}).stdout
    )
    assert data["incompatible"] == [
        {
            "name": "future",
            "distribution": "prosaas-future-test",
            "version": "0.1",
            "reason": f"requires prosaas<100,>=99, but prosaas {prosaas_core.__version__} is "
            "installed",
        }
    ]
    assert data["failed"] == []


def test_a_malformed_contract_declaration_is_incompatible(tmp_path, monkeypatch):
    from prosaas_core.plugins import get_plugin_manager

    monkeypatch.syspath_prepend(str(write_plugin(tmp_path, contract="version one")))
    pm = get_plugin_manager()
    assert pm.get_plugin("future") is None
    assert pm.incompatible["future"].reason.startswith("PROSAAS_CONTRACT 'version one' is not")


def test_deprecations_warn_once_with_the_removal_version(caplog):
    from prosaas_core.deprecation import deprecated

    name = "acme.old_thing"
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for _ in range(3):
            deprecated(name, removed_in="2.0", instead="acme.new_thing")
    assert [str(w.message) for w in seen] == [
        f"{name} is deprecated and will be removed in prosaas 2.0; use acme.new_thing instead"
    ]
    assert seen[0].category is DeprecationWarning
    logged = [r for r in caplog.records if r.name == "prosaas.deprecation"]
    assert [r.getMessage() for r in logged] == [f"DEPRECATED: {seen[0].message}"]
