# mypy: disable-error-code="empty-body"
# (hookspecs are signatures with docstrings; pluggy calls the implementations)
"""The hooks a prosaas plugin implements: the whole public plugin contract, documented once.

A plugin is a module (found through the entry point group ``prosaas``) whose functions are
decorated with ``prosaas_core.hookimpl`` and named after the specifications below. Every hook is
optional. pluggy calls implementations last-registered first; prosaas never depends on that order
(results are merged and duplicate job type names are an error).

What happens to a plugin that does not work (one policy, in every process)
--------------------------------------------------------------------------

Every hook is called through one caller, ``prosaas_core.plugins.call_hook``, plugin by plugin.
A plugin that fails to import, implements a hook not specified here (a typo), is incompatible
(its ``prosaas`` requirement or ``PROSAAS_CONTRACT`` excludes this core), or whose hook raises
or returns something malformed is **rejected**: unregistered for the rest of the process, listed
by ``prosaas plugins`` (``failed`` or ``incompatible``, with the reason) and logged once
(``Plugin 'x' failed to load and was skipped: ...``). Everything else keeps working. A rejected
plugin is rejected whole, job types included: half a plugin (its job types accepted by the API
with its blueprint missing, say) is harder to notice and to reason about than none.

- ``create_app()`` collects ``prosaas_blueprints`` before it builds the registry, so a plugin
  rejected there (its hook raised, a blueprint name already taken) has no job types in the API
  either. The API serves; ``/readyz`` and ``prosaas doctor`` still describe the deployment.
- ``prosaas worker`` builds the registry (``prosaas_job_types``, ``prosaas_services``,
  ``prosaas_migrations``, ``prosaas_schedules``); a rejected plugin's queues are not listened
  on and its services not started, while every other plugin's jobs and services run. Its
  queued jobs wait, as they would with the plugin uninstalled.
- The CLI calls ``prosaas_cli`` once at start; a rejected plugin's commands are missing and
  every other command works. ``prosaas db upgrade`` keeps a rejected plugin's job types allowed
  in ``chk_job_type`` while rows still use them, and never deletes a row.

Why not stop instead: the failure is in one plugin, usually written by another team, and a
process that refuses to start because of it takes down every other plugin's work with it. The
exception is a conflict *between* plugins (a job type, service or schedule name claimed twice):
prosaas cannot know which one the operator meant, so start-up fails with both names.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click
    import flask
    import pluggy

    from prosaas_core.registry import JobType, Schedule, Service

PROJECT = "prosaas"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec(historic=True)
def prosaas_addhooks(pm: pluggy.PluginManager) -> None:
    """Add the plugin's own hook specifications to the plugin manager `pm`.

    Called once for every plugin as it is registered, before prosaas checks that each
    implemented hook has a specification, so another plugin may implement the new hooks
    whatever order the plugins load in.

    Example::

        @hookimpl
        def prosaas_addhooks(pm):
            from acme_plugin import hookspecs
            pm.add_hookspecs(hookspecs)
    """


@hookspec
def prosaas_job_types() -> Iterable[JobType]:
    """Return the job types this plugin provides.

    Each name becomes an allowed value of the generated ``chk_job_type`` constraint and its
    queue is one the worker listens on. Two plugins returning the same name is a start-up error
    naming both plugins.

    Example::

        @hookimpl
        def prosaas_job_types():
            return [JobType("delete_leads", handlers.delete_leads, queue="maintenance",
                            payload_model=DeleteLeads, unique_per_business=True)]
    """


@hookspec
def prosaas_blueprints() -> Iterable[flask.Blueprint]:
    """Return Flask blueprints to mount on the app built by ``create_app()``.

    They are registered as they are (their own ``url_prefix``), after the core blueprint.
    Import Flask inside the hook so ``prosaas --help`` stays fast.

    Example::

        @hookimpl
        def prosaas_blueprints():
            from acme_plugin.api import bp
            return [bp]
    """


@hookspec
def prosaas_services() -> Iterable[Service]:
    """Return long-running services that every ``prosaas worker`` starts, each in a thread.

    ``run(ctx)`` loops until ``ctx.stop_event`` is set. A crash is logged with its traceback
    and the service restarted with backoff. Only ``PROSAAS_DISABLE_SERVICES=name`` turns one off.

    Example::

        @hookimpl
        def prosaas_services():
            return [Service("recording-worker", run_recording_worker)]
    """


@hookspec
def prosaas_migrations() -> Iterable[str]:
    """Return paths of Alembic version directories for the plugin's own tables.

    Each plugin keeps one Alembic branch (its first revision has ``branch_labels`` set to the
    plugin's name and ``depends_on`` the core revision it needs). ``prosaas db upgrade``
    upgrades every head.

    Example::

        @hookimpl
        def prosaas_migrations():
            return [str(Path(__file__).parent / "migrations")]
    """


@hookspec
def prosaas_cli(cli: click.Group) -> None:
    """Add commands to the root ``prosaas`` click group.

    Example::

        @hookimpl
        def prosaas_cli(cli):
            @cli.command("acme-report")
            def report():
                click.echo("ok")
    """


@hookspec
def prosaas_schedules() -> Iterable[Schedule]:
    """Return cron schedules: each occurrence enqueues a job of one of the installed types for
    every active business, exactly once across all workers (whichever fires it).

    Every ``prosaas worker`` runs the scheduler; operators pause and resume plugin schedules
    with ``prosaas schedules pause|resume NAME``.

    Example::

        @hookimpl
        def prosaas_schedules():
            return [Schedule("recordings-retention", cron="30 3 * * *",
                             job_type="recordings_retention", per_business=True)]
    """
