"""``prosaas tokens``: API tokens, each scoped to one business, and operator (admin) tokens
for the dashboard; shown once, stored hashed."""

from __future__ import annotations

import click

from prosaas_core.cli.common import UserError, echo_json, pass_runtime
from prosaas_core.runtime import Runtime


@click.group()
def tokens() -> None:
    """Create, list and revoke API tokens."""


@tokens.command()
@click.option("--business", "business_id", type=int, default=None, help="Business id.")
@click.option("--admin", is_flag=True, help="An operator token for the dashboard instead.")
@click.option("--name", default=None, help="A label to recognise the token by.")
@click.option("--json", "as_json", is_flag=True, help="Print an object with `token`.")
@pass_runtime
def create(
    rt: Runtime, business_id: int | None, admin: bool, name: str | None, as_json: bool
) -> None:
    """Create a token for a business (--business ID), or an operator token for the dashboard
    (--admin). It is printed once: only its hash is stored."""
    from prosaas_core.errors import NotFoundError
    from prosaas_core.tokens import PREFIX, SHOWN, create_admin_token, create_token

    if admin == (business_id is not None):
        raise UserError("give either --business ID or --admin")
    if name is not None and not 0 < len(name.strip()) <= 200:
        raise UserError("--name must be 1 to 200 characters")
    if admin:
        with rt.session() as s:
            token, prefix = create_admin_token(s, name)
        if as_json:
            echo_json({"token": token, "prefix": prefix, "admin": True, "name": name})
        else:
            click.echo(token)
        return
    assert business_id is not None  # exactly one of --business and --admin, checked above
    try:
        with rt.session() as s:
            token = create_token(s, business_id, name)
    except NotFoundError as exc:
        raise UserError(str(exc)) from None
    if as_json:
        prefix = token[: len(PREFIX) + SHOWN]
        echo_json({"token": token, "prefix": prefix, "business_id": business_id, "name": name})
    else:
        click.echo(token)


@tokens.command()
@click.argument("token_or_prefix")
@pass_runtime
def revoke(rt: Runtime, token_or_prefix: str) -> None:
    """Revoke a token, given whole or by the prefix `tokens list` shows."""
    from prosaas_core.tokens import revoke_token

    with rt.session() as s:
        n = revoke_token(s, token_or_prefix.strip())
    if n == 0:
        raise UserError(
            "no live token matches; see `prosaas tokens list --business ID` (or --admin)"
        )
    click.echo(f"revoked {n} token{'s' if n != 1 else ''}")


@tokens.command("list")
@click.option("--business", "business_id", type=int, default=None, help="Business id.")
@click.option("--admin", is_flag=True, help="List the operator tokens instead.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@pass_runtime
def list_(rt: Runtime, business_id: int | None, admin: bool, as_json: bool) -> None:
    """List a business's tokens, or the operator tokens (--admin): prefixes only, the tokens
    themselves are not stored."""
    from sqlalchemy import select

    from prosaas_core.models import ApiToken
    from prosaas_core.tokens import list_admin_tokens

    if admin == (business_id is not None):
        raise UserError("give either --business ID or --admin")
    with rt.session() as s:
        rows = (
            list_admin_tokens(s)
            if admin
            else [
                {
                    "prefix": t.prefix,
                    "name": t.name,
                    "created_at": t.created_at.isoformat(),
                    "revoked_at": t.revoked_at.isoformat() if t.revoked_at else None,
                }
                for t in s.scalars(
                    select(ApiToken)
                    .where(ApiToken.business_id == business_id)
                    .order_by(ApiToken.id)
                )
            ]
        )
    if as_json:
        echo_json(rows)
        return
    for r in rows:
        state = f"revoked {r['revoked_at']}" if r["revoked_at"] else "live"
        click.echo(f"{r['prefix']}…\t{r['name'] or '-'}\t{r['created_at']}\t{state}")
