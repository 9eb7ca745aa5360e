"""The plugin manager and registry, with plugins registered in-test (``pm.register``)."""

from __future__ import annotations

import types

import pluggy
import pytest

from prosaas_core import JobType, Service, hookimpl
from prosaas_core.errors import DuplicateJobTypeError, PluginError
from prosaas_core.plugins import get_plugin_manager, plugin_distributions
from prosaas_core.registry import blueprints_by_plugin, build_registry


def _noop(ctx):
    return None


def plugin(name: str, **hooks) -> types.ModuleType:
    mod = types.ModuleType(name)
    for hook, fn in hooks.items():
        setattr(mod, hook, hookimpl(fn))
    return mod


def test_registered_plugins_build_the_registry():
    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(
        plugin(
            "one",
            prosaas_job_types=lambda: [JobType("one_job", _noop, queue="q1")],
            prosaas_services=lambda: [Service("one-svc", _noop)],
            prosaas_migrations=lambda: ["/tmp/one"],
        ),
        name="one",
    )
    pm.register(plugin("two", prosaas_job_types=lambda: [JobType("two_job", _noop)]), name="two")
    reg = build_registry(pm)
    assert reg.job_type_owner == {"one_job": "one", "two_job": "two"}
    assert reg.service_owner == {"one-svc": "one"}
    assert reg.queues == ["default", "q1"]
    assert reg.migration_dirs() == ["/tmp/one"]
    assert plugin_distributions(pm) == {}  # registered in-test: no distribution


def test_duplicate_job_type_names_both_plugins():
    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(plugin("first", prosaas_job_types=lambda: [JobType("same", _noop)]), name="first")
    pm.register(plugin("second", prosaas_job_types=lambda: [JobType("same", _noop)]), name="second")
    with pytest.raises(DuplicateJobTypeError) as info:
        build_registry(pm)
    assert "'same'" in str(info.value)
    assert {info.value.first, info.value.second} == {"first", "second"}


def test_duplicate_service_names_both_plugins():
    pm = get_plugin_manager(load_entrypoints=False)
    for name in ("a", "b"):
        pm.register(plugin(name, prosaas_services=lambda: [Service("svc", _noop)]), name=name)
    with pytest.raises(PluginError, match="'svc' is provided by two plugins"):
        build_registry(pm)


def test_misspelled_hook_is_caught():
    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(plugin("typo", prosaas_job_type=lambda: []), name="typo")
    with pytest.raises(pluggy.PluginValidationError, match="prosaas_job_type"):
        pm.check_pending()


@pytest.mark.parametrize("bad", ["Bad", "1abc", "with-dash", "x" * 64, ""])
def test_invalid_job_type_names_are_rejected(bad):
    with pytest.raises(PluginError, match="invalid job type name"):
        JobType(bad, _noop)


def test_a_hook_that_raises_names_its_plugin():
    def boom():
        raise RuntimeError("kaput")

    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(plugin("boomer", prosaas_job_types=boom), name="boomer")
    with pytest.raises(PluginError, match="plugin 'boomer': prosaas_job_types"):
        build_registry(pm)


def test_entry_points_load_and_can_be_disabled():
    pm = get_plugin_manager()
    assert pm.get_plugin("acme") is not None
    assert plugin_distributions(pm)["acme"] == ("prosaas-acme-test", "1.2.3")
    assert [bp.name for bp in blueprints_by_plugin(pm)["acme"]] == ["acme"]
    pm = get_plugin_manager({"acme"})
    assert pm.get_plugin("acme") is None and pm.disabled == {"acme"}
    assert "acme_echo" not in build_registry(pm).job_types


def test_a_plugin_whose_hook_raises_is_rejected_and_the_rest_keep_working(caplog):
    """The one policy (hookspecs' module doc): the runtime, the app and `prosaas plugins` take
    the plugin out whole, list it with the reason and log it once."""
    from flask import Blueprint

    from prosaas_core import create_app
    from prosaas_core.cli.plugins import describe
    from prosaas_core.runtime import Runtime
    from prosaas_core.settings import Settings

    def boom():
        raise RuntimeError("kaput")

    ok_bp = Blueprint("okbp", __name__, url_prefix="/api/okbp")
    ok_bp.get("/ping")(lambda: {"pong": True})
    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(
        plugin(
            "ok",
            prosaas_job_types=lambda: [JobType("ok_job", _noop)],
            prosaas_blueprints=lambda: [ok_bp],
        ),
        name="ok",
    )
    pm.register(
        plugin("badjobs", prosaas_job_types=boom, prosaas_services=lambda: [Service("s", _noop)]),
        name="badjobs",
    )
    pm.register(
        plugin(
            "badbp", prosaas_job_types=lambda: [JobType("bp_job", _noop)], prosaas_blueprints=boom
        ),
        name="badbp",
    )
    rt = Runtime(Settings.from_env({"DATABASE_URL": "sqlite://"}), pm=pm)
    client = create_app(runtime=rt).test_client()
    assert client.get("/api/okbp/ping").get_json() == {"pong": True}
    assert rt.registry.job_type_owner == {"ok_job": "ok"}  # badbp's job type went with it
    assert rt.registry.services == {}
    data = describe(rt)
    assert [p["name"] for p in data["plugins"]] == ["ok"]
    assert data["failed"] == [
        {"name": "badbp", "reason": "prosaas_blueprints() raised RuntimeError: kaput"},
        {"name": "badjobs", "reason": "prosaas_job_types() raised RuntimeError: kaput"},
    ]
    logged = [r.getMessage() for r in caplog.records if "failed to load" in r.getMessage()]
    assert sorted(logged) == [
        "Plugin 'badbp' failed to load and was skipped: prosaas_blueprints() raised "
        "RuntimeError: kaput",
        "Plugin 'badjobs' failed to load and was skipped: prosaas_job_types() raised "
        "RuntimeError: kaput",
    ]
