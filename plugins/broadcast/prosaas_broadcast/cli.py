"""``prosaas broadcasts list|show``: the broadcasts of a business, from the database."""

from __future__ import annotations

import click

from prosaas_core.cli.common import UserError, echo_json, get_runtime


@click.group()
def broadcasts() -> None:
    """Inspect broadcasts (SMS/WhatsApp to leads)."""


def _detail(rt, b: dict) -> dict:
    from prosaas_broadcast.api import _detail as detail
    from prosaas_broadcast.config import BroadcastConfig

    with rt.session() as s:
        return detail(s, b, BroadcastConfig.from_settings(rt.settings))


@broadcasts.command("list")
@click.option("--business", "business_id", type=int, required=True, help="Business id.")
@click.option("--limit", type=click.IntRange(1, 500), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON array.")
def list_cmd(business_id: int, limit: int, as_json: bool) -> None:
    """The business's broadcasts, newest first."""
    from prosaas_broadcast import store
    from prosaas_broadcast.api import _summary

    rt = get_runtime()
    with rt.session() as s:
        rows = [
            _summary(b) for b in store.list_broadcasts(s, business_id, before=None, limit=limit)
        ]
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo(f"no broadcasts for business {business_id}")
    for b in rows:
        click.echo(
            f"{b['id']:>6}  {b['status']:<10} {b['channel']:<8} {b['provider']:<8} "
            f"total={b['total'] if b['total'] is not None else '?'}  created {b['created_at']}"
        )


@broadcasts.command("show")
@click.argument("broadcast_id", type=int)
@click.option("--business", "business_id", type=int, help="Only if it is this business's.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def show_cmd(broadcast_id: int, business_id: int | None, as_json: bool) -> None:
    """One broadcast: status, counts by status, skipped by reason, rate and ETA."""
    from sqlalchemy import select

    from prosaas_broadcast.tables import broadcasts as B

    rt = get_runtime()
    with rt.session() as s:
        q = select(B).where(B.c.id == broadcast_id)
        if business_id is not None:
            q = q.where(B.c.business_id == business_id)
        row = s.execute(q).first()
    if row is None:
        raise UserError(f"broadcast {broadcast_id} not found")
    b = dict(row._mapping)
    d = _detail(rt, b)
    d["business_id"] = b["business_id"]
    if as_json:
        echo_json(d)
        return
    click.echo(
        f"broadcast {d['id']} ({d['status']}) business {b['business_id']}, job {d['job_id']}"
    )
    click.echo(f"  {d['channel']} via {d['provider']} at {d['rate_per_second']:g}/s")
    counts = ", ".join(f"{n} {k}" for k, n in d["counts"].items() if n)
    click.echo(f"  recipients: {counts or 'none yet'}")
    if d["skipped"]:
        click.echo("  skipped: " + ", ".join(f"{n} {k}" for k, n in sorted(d["skipped"].items())))
    if d["eta_seconds"]:
        click.echo(f"  eta: {d['eta_seconds']:g}s")
    if d["error"]:
        click.echo(f"  error: {d['error']}")
