"""The root ``prosaas`` group. Command modules load only when their command runs, so
``prosaas --help`` stays fast however many plugins are installed."""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

import click

from prosaas_core.errors import ProsaasError

# name -> (module:attribute, short help shown by --help without importing the module)
COMMANDS: dict[str, tuple[str, str]] = {
    "db": ("prosaas_core.cli.db:db", "Schema migrations and the generated chk_job_type."),
    "plugins": ("prosaas_core.cli.plugins:plugins", "List installed plugins and what they add."),
    "worker": ("prosaas_core.cli.worker:worker", "Run a worker: jobs and plugin services."),
    "serve": ("prosaas_core.cli.serve:serve", "Serve the HTTP API with gunicorn."),
    "businesses": ("prosaas_core.cli.businesses:businesses", "Create and list businesses."),
    "tokens": ("prosaas_core.cli.tokens:tokens", "Create and revoke API tokens."),
    "jobs": ("prosaas_core.cli.jobs:jobs", "Enqueue, inspect, cancel, retry and watch jobs."),
    "schedules": ("prosaas_core.cli.schedules:schedules", "Cron schedules: list, add, pause."),
    "limits": ("prosaas_core.cli.limits:limits", "Per-business concurrency and rate limits."),
    "doctor": ("prosaas_core.cli.doctor:doctor", "Check the deployment; exit 1 on any problem."),
    "demo": ("prosaas_core.cli.demo:demo", "Run an end-to-end demo on the embedded default."),
}


class LazyGroup(click.Group):
    """A group whose built-in commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.commands or name not in COMMANDS:
            return super().get_command(ctx, name)
        module, attr = COMMANDS[name][0].split(":")
        try:
            cmd = getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError:
            return None  # a command group not built yet
        self.add_command(cmd, name)
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            if name in COMMANDS and name not in self.commands:
                rows.append((name, COMMANDS[name][1]))
            else:
                cmd = self.commands.get(name)
                if cmd is not None and not cmd.hidden:
                    rows.append((name, cmd.get_short_help_str(limit=60)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """``prosaas --version``: the core, the plugin contract it provides, each plugin."""
    if not value or ctx.resilient_parsing:
        return
    from prosaas_core.plugins import versions
    from prosaas_core.runtime import Runtime

    rt = ctx.obj if isinstance(ctx.obj, Runtime) else Runtime()
    v = versions(rt.pm)
    click.echo(f"prosaas {v['prosaas']} (plugin contract {v['contract']})")
    for name, version in v["plugins"].items():
        click.echo(f"  {name} {version or '(no distribution)'}")
    for name, inc in sorted(rt.pm.incompatible.items()):
        click.echo(f"  {name} {inc.version or ''} INCOMPATIBLE: {inc.reason}")
    ctx.exit()


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log at DEBUG level.")
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the prosaas, plugin contract and plugin versions, then exit.",
)
def cli(verbose: bool) -> None:
    """prosaas: plugin-based background jobs for multi-tenant SaaS backends.

    Settings come from the environment: DATABASE_URL (default sqlite:///prosaas.db),
    REDIS_URL (default redis://localhost:6379/0), PROSAAS_DISABLE_PLUGINS,
    PROSAAS_DISABLE_SERVICES, RUN_MIGRATIONS.
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s [%(name)s] %(message)s",
        stream=sys.stderr,
    )


def _add_plugin_commands(group: click.Group, pm: Any) -> None:
    """Let each plugin add its commands; one whose hook raises is rejected (``hookspecs``)."""
    from prosaas_core.plugins import call_hook

    call_hook(pm, "prosaas_cli", cli=group)


def main(argv: list[str] | None = None) -> Any:
    """Console entry point: plugin commands added, prosaas errors shown as one line.

    The plugin manager is built once here and shared by every command through the runtime.
    """
    from prosaas_core.plugins import get_plugin_manager
    from prosaas_core.runtime import Runtime
    from prosaas_core.settings import Settings

    try:
        settings = Settings.from_env()
    except ProsaasError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    pm = get_plugin_manager(settings.disable_plugins)
    _add_plugin_commands(cli, pm)
    runtime = Runtime(settings, pm=pm)
    try:
        return cli.main(args=argv, prog_name="prosaas", standalone_mode=True, obj=runtime)
    except ProsaasError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except Exception as exc:
        from sqlalchemy.exc import DBAPIError

        if not isinstance(exc, DBAPIError):
            raise
        from prosaas_core.errors import first_line, is_missing_schema

        hint = "; run `prosaas db upgrade`" if is_missing_schema(exc) else ""
        click.echo(f"error: database error: {first_line(exc)}{hint}", err=True)
        sys.exit(1)
