"""The public API: every core name a plugin may import, in one place.

Anything not listed here may change without notice. ``tests/test_import_boundary.py`` fails
when a file under ``plugins/`` (or the third-party stand-in ``tests/fixtures/acme_plugin``)
imports a core name that is not listed, and when the list printed in ``docs/plugin-guide.md``
differs from :func:`markdown` (regenerate it with ``python -m prosaas_core.public``). The
modules listed here are also the ones mypy checks strictly (``pyproject.toml``).
"""

from __future__ import annotations

from collections.abc import Mapping

#: a module whose public names are its own ``__all__``
ALL = "__all__"

#: module -> the names a plugin may import from it: a set, ``ALL`` (the module's ``__all__``),
#: or ``None`` (every name of the module that does not start with an underscore: a module that
#: is public as a whole)
PUBLIC: Mapping[str, frozenset[str] | str | None] = {
    # the plugin contract: hookimpl, JobType, Service, Schedule, JobContext, ServiceContext, ...
    "prosaas_core": ALL,
    # HTTP: what a blueprint needs
    "prosaas_core.api": ALL,
    "prosaas_core.api.openapi": frozenset({"describe"}),
    "prosaas_core.api.params": frozenset({"parse_query"}),
    "prosaas_core.api.schemas": frozenset({"Enqueued", "Error"}),
    # Twilio-signed webhooks: the URL the signature covers, and the start-up refusal
    "prosaas_core.api.webhooks": frozenset(
        {"WebhookConfigError", "require_public_base_url", "signed_url"}
    ),
    # CLI: what a prosaas_cli command needs
    "prosaas_core.cli.common": frozenset({"UserError", "echo_json", "get_runtime", "pass_runtime"}),
    # the plugin manager, for a plugin that declares hooks of its own (prosaas_addhooks)
    "prosaas_core.plugins": frozenset({"get_plugin_manager"}),
    # the core domain: businesses, leads and calls, and the lead selection every lead job uses
    "prosaas_core.models": frozenset({"Business", "Call", "Lead", "LeadImport"}),
    "prosaas_core.leads": ALL,
    # building blocks, public as whole modules
    "prosaas_core.backoff": None,
    "prosaas_core.bounds": None,
    "prosaas_core.csvsafe": None,
    "prosaas_core.errors": None,
    "prosaas_core.limits": None,
    # the one store: named queries, the typed connection wrapper, the core tables plugins use
    "prosaas_core.store": ALL,
    # deprecating a name of your own plugin: warns once, with the removal version
    "prosaas_core.deprecation": frozenset({"deprecated"}),
    "prosaas_core.settings": frozenset({"Settings"}),
    # the pytest plugin a plugin's own test suite uses (fixtures, worker/serve processes)
    "prosaas_core.testing": None,
}


def public_names(module: str) -> frozenset[str] | None:
    """The public names of `module` (``None``: every name without a leading underscore; an
    empty set for a module that is not public). Imports the module to read an ``__all__``."""
    names = PUBLIC.get(module, frozenset())
    if names == ALL:
        import importlib

        return frozenset(importlib.import_module(module).__all__)
    assert not isinstance(names, str), names
    return names


def is_public(module: str, name: str | None = None) -> bool:
    """Whether a plugin may ``import module`` (`name` None) or ``from module import name``.

    ``from prosaas_core import limits`` is the import of the module ``prosaas_core.limits``."""
    if name is None:
        return module in PUBLIC
    if f"{module}.{name}" in PUBLIC:
        return True
    names = public_names(module)
    return not name.startswith("_") if names is None else name in names


def markdown() -> str:
    """The list as the plugin guide prints it: one bullet per module."""
    lines = []
    for module in sorted(PUBLIC):
        names = public_names(module)
        shown = "every name" if names is None else ", ".join(f"`{n}`" for n in sorted(names))
        lines.append(f"- `{module}`: {shown}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
