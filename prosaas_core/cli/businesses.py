"""``prosaas businesses``: the tenants."""

from __future__ import annotations

import click

from prosaas_core.cli.common import UserError, echo_json, pass_runtime
from prosaas_core.runtime import Runtime


@click.group()
def businesses() -> None:
    """Create and list businesses."""


@businesses.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print an object with `id`.")
@pass_runtime
def create(rt: Runtime, name: str, as_json: bool) -> None:
    """Create a business called NAME and print its id."""
    from prosaas_core.models import Business

    name = name.strip()
    if not name or len(name) > 200:
        raise UserError("business name must be 1 to 200 characters")
    with rt.session() as s:
        b = Business(name=name)
        s.add(b)
        s.flush()
        bid = b.id
    if as_json:
        echo_json({"id": bid, "name": name})
    else:
        click.echo(bid)


@businesses.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@pass_runtime
def list_(rt: Runtime, as_json: bool) -> None:
    """List businesses, oldest first."""
    from sqlalchemy import select

    from prosaas_core.models import Business

    with rt.session() as s:
        rows = [
            {"id": b.id, "name": b.name, "created_at": b.created_at.isoformat()}
            for b in s.scalars(select(Business).order_by(Business.id))
        ]
    if as_json:
        echo_json(rows)
        return
    for r in rows:
        click.echo(f"{r['id']}\t{r['name']}\t{r['created_at']}")
