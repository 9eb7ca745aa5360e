"""One test per hook of the contract, through a real pip-installed plugin (acme), plus the
checks that keep the hook reference true."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

from sqlalchemy import inspect as sa_inspect

from prosaas_core import hookspecs
from prosaas_core.api.app import create_app

ROOT = Path(__file__).resolve().parent.parent
HOOKS = sorted(n for n, f in vars(hookspecs).items() if n.startswith("prosaas_") and callable(f))


def test_hook_prosaas_job_types(runtime):
    jt = runtime.registry.job_types["acme_count"]
    assert (jt.queue, runtime.registry.job_type_owner["acme_count"]) == ("acme", "acme")
    assert "acme" in runtime.registry.queues


def test_hook_prosaas_blueprints(runtime):
    client = create_app(runtime=runtime).test_client()
    resp = client.get("/api/acme/ping")
    assert resp.status_code == 200 and resp.get_json() == {"pong": True}


def test_hook_prosaas_services(runtime):
    svc = runtime.registry.services["acme-ticker"]
    assert runtime.registry.service_owner["acme-ticker"] == "acme" and callable(svc.run)


def test_hook_prosaas_migrations(runtime):
    assert "acme_ticks" in sa_inspect(runtime.engine).get_table_names()


def test_hook_prosaas_cli(cli):
    proc = cli("acme-hello")
    assert proc.returncode == 0 and proc.stdout.strip() == "hello from acme"


def test_hook_prosaas_schedules(runtime, cli):
    sched = runtime.registry.schedules["acme-new-year"]
    assert runtime.registry.schedule_owner["acme-new-year"] == "acme"
    assert (sched.cron, sched.job_type, sched.per_business) == ("0 0 1 1 *", "acme_echo", True)
    (listed,) = [s for s in json.loads(cli("schedules", "list", "--json", check=True).stdout)
                 if s["name"] == "acme-new-year"]  # fmt: skip
    assert listed["source"] == "plugin" and listed["next_occurrence"].endswith(
        "-01-01T00:00:00+00:00"
    )


def _signature(name: str) -> str:
    return f"def {name}{inspect.signature(getattr(hookspecs, name))}".replace("'", "")


def test_every_hook_is_in_the_reference_with_its_exact_signature():
    reference = (ROOT / "docs" / "hooks.md").read_text()
    missing = [n for n in HOOKS if _signature(n) not in reference]
    assert HOOKS and not missing, f"document in docs/hooks.md: {[_signature(n) for n in missing]}"
    documented = set(re.findall(r"^## (prosaas_\w+)$", reference, re.M))
    assert documented == set(HOOKS), f"docs/hooks.md documents unknown hooks: {documented}"


def test_every_hook_has_a_test_of_its_own():
    here = Path(__file__).read_text()
    untested = [n for n in HOOKS if f"def test_hook_{n}(" not in here]
    assert not untested, f"add a test_hook_<name> test for: {untested}"


def test_hook_prosaas_addhooks():
    """A plugin implementing a hook another plugin adds loads whatever the registration order."""
    import pluggy

    from prosaas_core import hookimpl
    from prosaas_core.plugins import _reject_unspecified_hooks, get_plugin_manager

    spec = pluggy.HookspecMarker("prosaas")

    class Specs:
        @spec(firstresult=True)
        def acme_greet(self, who):
            """Greet someone."""

    class Implementer:
        @hookimpl
        def acme_greet(self, who):
            return f"hello {who}"

    class Adder:
        @hookimpl
        def prosaas_addhooks(self, pm):
            pm.add_hookspecs(Specs)

    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(Implementer(), name="implementer")  # registered before the spec exists
    pm.register(Adder(), name="adder")
    _reject_unspecified_hooks(pm)
    assert pm.failures == {}
    assert pm.hook.acme_greet(who="ops") == "hello ops"
