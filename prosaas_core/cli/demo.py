"""``prosaas demo``: the whole flow on the embedded default, in one command.

Creates a business and a token, imports generated leads through the HTTP API (the app runs
in-process behind Flask's test client), starts a bulk update and a bulk delete through the API,
runs a worker until both are done while drawing their progress bars, and prints a summary.

With no settings it runs on a SQLite file in the working directory and, when no Redis answers at
``REDIS_URL``, on an in-process stand-in (fakeredis), so nothing has to be installed or started.
With ``DATABASE_URL`` and ``REDIS_URL`` pointing at real servers it uses those.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import click

from prosaas_core.cli.common import UserError

if TYPE_CHECKING:
    from flask.testing import FlaskClient

    from prosaas_core.runtime import Runtime

#: the job types the demo needs, and the plugin distribution that provides each
NEEDED = {"update_leads": "prosaas-update-leads", "delete_leads": "prosaas-delete-leads"}
BAR_WIDTH = 30


def _use_redis_or_stand_in(rt: Runtime) -> str:
    """Use the Redis at REDIS_URL when it answers; otherwise an in-process fakeredis."""
    from redis.exceptions import RedisError

    from prosaas_core.urls import mask_url

    url = mask_url(rt.settings.redis_url)
    try:
        rt.redis.ping()
        return f"Redis at {url}"
    except (RedisError, OSError):
        import fakeredis

        click.echo(
            f"No Redis answers at {url}: using an in-process stand-in (fakeredis) instead, "
            "so jobs run inside this process."
        )
        rt.redis = fakeredis.FakeRedis()
        return "in-process Redis stand-in (fakeredis)"


def _csv(n: int, start: int) -> str:
    """`n` generated leads as CSV (name, phone, email), plus two bad rows the import reports."""
    rows = ["name,phone,email"]
    rows += [f"Demo Lead {i},,lead{i}@example.com" for i in range(start, start + n)]
    rows += ["No Contact,,", "Bad Email,,not-an-email"]
    return "\n".join(rows) + "\n"


class Api:
    """The in-process app, called with the demo business's token."""

    def __init__(self, client: FlaskClient, token: str) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"}

    def call(self, method: str, path: str, expect: int, **kw: Any) -> dict:
        resp = self.client.open(path, method=method, headers=self.headers, **kw)
        if resp.status_code != expect:
            raise UserError(f"{method} {path} answered {resp.status_code}: {resp.get_data(True)}")
        return resp.get_json()


def _bar(job: dict) -> str:
    done, total = job.get("processed") or 0, job.get("total")
    frac = min(done / total, 1.0) if total else (1.0 if job["status"] == "succeeded" else 0.0)
    filled = int(frac * BAR_WIDTH)
    count = f"{done}/{total}" if total is not None else f"{done}/?"
    return (
        f"  job {job['id']:>4} {job['job_type']:<14} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}]"
        f" {frac:6.1%}  {count:>13}  {job['status']}"
    )


def _draw_bars(api: Api, job_ids: list[int], stop: threading.Event) -> None:
    """Redraw one bar per job, in place on a terminal, until every job is final."""
    final = {"succeeded", "failed", "cancelled"}
    tty = sys.stdout.isatty()  # (click.get_text_stream is deprecated since Click 8.2)
    drawn = 0
    while True:
        jobs = [api.call("GET", f"/api/jobs/{j}", 200) for j in job_ids]
        lines = [_bar(j) for j in jobs]
        done = all(j["status"] in final for j in jobs)
        if tty:
            if drawn:
                click.echo(f"\x1b[{drawn}F", nl=False)  # back to the first bar
            click.echo("\n".join(f"{ln}\x1b[K" for ln in lines))
            drawn = len(lines)
        elif done:
            click.echo("\n".join(lines))
        if done or stop.wait(0.2):
            if not done:
                continue
            return


def _demo_broadcast(rt: Runtime, api: Api, transport: str) -> dict | None:
    """When the broadcast plugin is installed: three leads with phones and a broadcast to them
    through its ``log`` provider, over the HTTP API (the core never imports a plugin). None
    when it is not installed. The stand-in Redis runs the rate limiter's Lua scripts too
    (fakeredis with Lua)."""
    if "broadcast" not in rt.registry.job_types:
        return None
    people = (("Ada", "+14155550101"), ("Grace", "+14155550102"), ("Linus", "+14155550103"))
    ids = [
        api.call("POST", "/api/leads", 201, json={"name": n, "phone": p})["id"] for n, p in people
    ]
    body = {"lead_ids": ids, "template": "Hi {name}, thanks for trying prosaas!", "provider": "log"}
    return api.call("POST", "/api/broadcasts", 202, json=body)


def _run_worker_until_done(rt: Runtime, api: Api, job_ids: list[int]) -> None:
    """A burst worker in this process (RQ installs signal handlers, so it takes the main
    thread); the bars are drawn from a second thread."""
    from prosaas_core.worker import run_worker

    stop = threading.Event()
    errors: list[BaseException] = []

    def bars() -> None:
        try:
            _draw_bars(api, job_ids, stop)
        except BaseException as exc:  # shown after the worker returns
            errors.append(exc)

    drawer = threading.Thread(target=bars, name="demo-progress", daemon=True)
    drawer.start()
    try:
        types = [*NEEDED, *(["broadcast"] if "broadcast" in rt.registry.job_types else [])]
        run_worker(rt, burst=True, queues=sorted({rt.registry.job_type(t).queue for t in types}))
    finally:
        stop.set()
        drawer.join(timeout=30)
    if errors:
        raise errors[0]


@click.command()
@click.option("--leads", "n_leads", default=3000, show_default=True, help="Leads to import.")
@click.option("-v", "--verbose", is_flag=True, help="Show the log lines too.")
def demo(n_leads: int, verbose: bool) -> None:
    """Run an end-to-end demo on the embedded default: import leads, bulk update and bulk delete
    them through the API, and run a worker until done, with progress bars."""
    from sqlalchemy import func, select

    from prosaas_core import create_app, migrate
    from prosaas_core.cli.common import get_runtime
    from prosaas_core.models import Business, Lead
    from prosaas_core.tokens import create_token

    if n_leads < 10:
        raise UserError("--leads must be at least 10")
    if not verbose:  # log lines (migrations, worker) would tear the progress bars
        for name in ("", "rq", "rq.worker", "alembic", "prosaas"):
            logging.getLogger(name).setLevel(logging.WARNING)
    rt = get_runtime()
    missing = [f"{t} ({dist})" for t, dist in NEEDED.items() if t not in rt.registry.job_types]
    if missing:
        raise UserError(f"the demo needs job types that are not installed: {', '.join(missing)}")
    from sqlalchemy.engine import make_url

    db = make_url(rt.settings.database_url).render_as_string(hide_password=True)
    click.echo(f"prosaas demo on {db}")
    transport = _use_redis_or_stand_in(rt)
    migrate.upgrade(rt)
    click.echo("Schema up to date.")

    with rt.session() as s:
        business = Business(name="Demo Calls Ltd")
        s.add(business)
        s.flush()
        business_id = business.id
        token = create_token(s, business_id, name="demo")
    click.echo(f"Business {business_id} created, with an API token ({token[:10]}...).")
    api = Api(create_app(runtime=rt).test_client(), token)

    began = time.monotonic()
    first, second = n_leads * 2 // 3, n_leads - n_leads * 2 // 3
    imports = []
    for start, n in ((0, first), (first, second)):
        res = api.call(
            "POST",
            "/api/leads/import?filename=demo.csv",
            201,
            data=_csv(n, start),
            content_type="text/csv",
        )
        imports.append(res)
        bad = ", ".join(f"line {e.get('line')}" for e in res["errors"][:2])
        click.echo(
            f"Imported {res['imported']} leads as import {res['import_id']} "
            f"({res['failed']} bad rows reported: {bad})."
        )

    update = api.call(
        "POST",
        "/api/leads/bulk-update",
        202,
        json={
            "filter": {"import_id": imports[0]["import_id"]},
            "set": {"status": "contacted", "owner": "demo", "tags": ["demo"]},
        },
    )
    delete = api.call(
        "POST",
        "/api/leads/bulk-delete",
        202,
        json={"filter": {"import_id": imports[1]["import_id"]}},
    )
    click.echo(
        f"Bulk update: job {update['id']}; bulk delete: job {delete['id']}. Running a worker..."
    )
    broadcast = _demo_broadcast(rt, api, transport)
    extra = [broadcast["job"]["id"]] if broadcast else []
    _run_worker_until_done(rt, api, [update["id"], delete["id"], *extra])

    jobs = [api.call("GET", f"/api/jobs/{j['id']}", 200) for j in (update, delete)]
    failed = [j for j in jobs if j["status"] != "succeeded"]
    if failed:
        raise UserError(f"job {failed[0]['id']} {failed[0]['status']}: {failed[0].get('error')}")
    with rt.session() as s:
        remaining = dict(
            s.execute(
                select(Lead.status, func.count())
                .where(Lead.business_id == business_id)
                .group_by(Lead.status)
            ).all()
        )
    click.echo("")
    click.echo("Summary")
    click.echo(f"  database     {db}")
    click.echo(f"  transport    {transport}")
    click.echo(f"  imported     {sum(i['imported'] for i in imports)} leads in 2 imports")
    click.echo(f"  updated      {jobs[0]['result']['updated']} leads (status=contacted)")
    click.echo(f"  deleted      {jobs[1]['result']['deleted']} leads")
    by_status = ", ".join(f"{n} {status}" for status, n in sorted(remaining.items()))
    click.echo(f"  remaining    {sum(remaining.values())} leads ({by_status})")
    if broadcast:
        sent = api.call("GET", f"/api/broadcasts/{broadcast['id']}", 200)["counts"]["sent"]
        click.echo(f"  broadcast    {sent} messages sent through the log provider")
    click.echo(f"  took         {time.monotonic() - began:.1f}s")
