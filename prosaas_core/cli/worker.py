"""``prosaas worker``: run jobs and plugin services."""

from __future__ import annotations

import click

from prosaas_core.cli.common import UserError, pass_runtime


@click.command()
@click.option("--burst", is_flag=True, help="Exit once the queues are empty.")
@click.option(
    "--queues",
    default="",
    metavar="A,B",
    help="Comma-separated queues to listen on (default: every installed job type's queue).",
)
@pass_runtime
def worker(rt, burst: bool, queues: str) -> None:
    """Run a worker: an RQ worker on the job queues plus every installed plugin service.

    Every installed service starts, whatever ENABLE_SCHEDULERS says; PROSAAS_DISABLE_SERVICES
    (comma-separated names) turns services off. SIGTERM/SIGINT stop it cleanly.
    """
    from redis.exceptions import RedisError

    from prosaas_core.worker import run_worker

    names = [q.strip() for q in queues.split(",") if q.strip()]
    try:
        code = run_worker(rt, queues=names or None, burst=burst)
    except RedisError as exc:
        from prosaas_core.urls import mask_url, mask_urls_in

        url = mask_url(rt.settings.redis_url)
        raise UserError(f"Redis unreachable at {url}: {mask_urls_in(str(exc))}") from None
    except ValueError as exc:
        raise UserError(str(exc)) from None
    _exit_within(rt.settings.shutdown_timeout, code)


def _exit_within(bound: float, code: int) -> None:
    """Exit now, even if a plugin left non-daemon threads behind (the interpreter would
    otherwise wait for them forever): give them `bound` seconds, then leave anyway."""
    import logging
    import os
    import threading
    import time

    end = time.monotonic() + bound
    for t in threading.enumerate():
        if t is not threading.current_thread() and not t.daemon:
            t.join(max(end - time.monotonic(), 0))
    left = [t.name for t in threading.enumerate() if t.is_alive() and not t.daemon]
    left.remove(threading.current_thread().name)
    if left:
        logging.getLogger("prosaas.worker").warning("exiting with threads still alive: %s", left)
        logging.shutdown()
        os._exit(code)
    raise SystemExit(code)
