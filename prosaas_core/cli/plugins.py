"""``prosaas plugins``: what each installed plugin adds, and which ones failed to load."""

from __future__ import annotations

from typing import Any

import click

from prosaas_core.cli.common import echo_json, pass_runtime
from prosaas_core.runtime import Runtime


def describe(rt: Runtime) -> dict[str, Any]:
    """The installed plugins as plain data (the shape of ``prosaas plugins --json``)."""
    from prosaas_core.plugins import plugin_blueprints, plugin_distributions, versions

    pm = rt.pm
    blueprints = plugin_blueprints(pm)  # before the registry: a plugin rejected here is out
    reg = rt.registry
    dists = plugin_distributions(pm)
    plugins = []
    # Blocked (disabled) names are listed by pluggy with a None plugin: skip them here.
    for name in sorted(n for n, p in pm.list_name_plugin() if p is not None):
        dist, version = dists.get(name, (None, None))
        plugins.append(
            {
                "name": name,
                "distribution": dist,
                "version": version,
                "job_types": sorted(t for t, owner in reg.job_type_owner.items() if owner == name),
                "blueprints": [
                    {"name": bp.name, "url_prefix": bp.url_prefix}
                    for bp in sorted(blueprints.get(name, []), key=lambda b: b.name)
                ],
                "services": sorted(s for s, owner in reg.service_owner.items() if owner == name),
                "migrations": list(reg.migrations.get(name, [])),
            }
        )
    v = versions(pm)
    return {
        "prosaas": {"version": v["prosaas"], "contract": v["contract"]},
        "plugins": plugins,
        "failed": [{"name": n, "reason": r} for n, r in sorted(pm.failures.items())],
        "incompatible": [
            {
                "name": i.name,
                "distribution": i.distribution,
                "version": i.version,
                "reason": i.reason,
            }
            for _, i in sorted(pm.incompatible.items())
        ],
        "disabled": sorted(pm.disabled),
    }


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@pass_runtime
def plugins(rt: Runtime, as_json: bool) -> None:
    """List installed plugins: distribution, version, job types, blueprints, services and
    migrations; plugins that failed to load or do not fit this prosaas (incompatible), with
    the reason; disabled plugins."""
    data = describe(rt)
    if as_json:
        echo_json(data)
        return
    if not data["plugins"]:
        click.echo("no plugins installed")
    for p in data["plugins"]:
        click.echo(f"{p['name']}  ({p['distribution'] or 'not installed'} {p['version'] or ''})")
        click.echo(f"  job types:  {', '.join(p['job_types']) or '-'}")
        bps = [f"{b['name']} ({b['url_prefix'] or '/'})" for b in p["blueprints"]]
        click.echo(f"  blueprints: {', '.join(bps) or '-'}")
        click.echo(f"  services:   {', '.join(p['services']) or '-'}")
        click.echo(f"  migrations: {', '.join(p['migrations']) or '-'}")
    for f in data["failed"]:
        click.echo(f"FAILED {f['name']}: {f['reason']}")
    for i in data["incompatible"]:
        click.echo(f"INCOMPATIBLE {i['name']} ({i['distribution']} {i['version']}): {i['reason']}")
    for name in data["disabled"]:
        click.echo(f"disabled {name} (PROSAAS_DISABLE_PLUGINS)")
