"""``prosaas outbound-calls ...``: campaigns, the business's caller ids, its do-not-call list
and its caps. Heavy imports stay inside the commands so ``prosaas --help`` stays fast."""

from __future__ import annotations

import json
from typing import Any

import click


class UserError(click.ClickException):
    """One line ``error: ...`` and exit 1."""

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def _runtime():
    from prosaas_core import Runtime

    root = click.get_current_context().find_root()
    if not isinstance(root.obj, Runtime):
        root.obj = Runtime()
        root.call_on_close(root.obj.close)
    return root.obj


def _echo(obj: Any, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(obj, default=str, sort_keys=True))
    else:
        for k, v in obj.items():
            click.echo(f"{k}: {json.dumps(v, default=str) if isinstance(v, dict | list) else v}")


def _business(s, business_id: int) -> None:
    from sqlalchemy import select

    from prosaas_outbound_calls.tables import businesses

    if s.execute(select(businesses.c.id).where(businesses.c.id == business_id)).first() is None:
        raise UserError(f"business {business_id} not found")


def _phone(raw: str) -> str:
    from prosaas_outbound_calls.phones import strict_e164

    try:
        return strict_e164(raw)
    except ValueError as exc:
        raise UserError(f"{raw!r} {exc}") from None


business_option = click.option("--business", "business_id", type=int, required=True)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@click.group("outbound-calls")
def group() -> None:
    """Outbound call campaigns (plugin outbound_calls)."""


@group.command("start")
@business_option
@click.option("--payload", required=True, help="The campaign as JSON (see the plugin README).")
@click.option("--dry-run", is_flag=True, help="Preview only: counts, a sample, the ETA.")
@json_option
def start(business_id: int, payload: str, dry_run: bool, as_json: bool) -> None:
    """Start a campaign for a business (prints its id)."""
    from pydantic import ValidationError

    from prosaas_core import enqueue
    from prosaas_outbound_calls import campaigns, report
    from prosaas_outbound_calls.config import OutboundConfig
    from prosaas_outbound_calls.payload import OutboundCalls

    try:
        body = OutboundCalls.model_validate(json.loads(payload))
    except json.JSONDecodeError as exc:
        raise UserError(f"--payload is not valid JSON: {exc.msg}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "payload"
        raise UserError(f"invalid payload: {loc}: {first['msg']}") from None
    rt = _runtime()
    cfg = OutboundConfig.from_settings(rt.settings)
    with rt.session() as s:
        _business(s, business_id)
        try:
            resolved = campaigns.resolve(s, business_id, body, cfg)
        except campaigns.CampaignInvalid as exc:
            raise UserError(f"{exc} ({json.dumps(exc.details)})") from None
        if dry_run:
            _echo(report.preview(s, business_id, body, resolved, cfg), as_json)
            return
    res = enqueue(rt, "enqueue_outbound_calls", business_id, body.model_dump(mode="json"))
    with rt.session() as s:
        campaigns.create(s, res.id, business_id, body, resolved)
    click.echo(json.dumps({"id": res.id}) if as_json else str(res.id))


@group.command("show")
@click.argument("campaign_id", type=int)
@business_option
@json_option
def show(campaign_id: int, business_id: int, as_json: bool) -> None:
    """A campaign: counts by status, live calls, rate, ETA."""
    from prosaas_outbound_calls import campaigns, report

    rt = _runtime()
    with rt.session() as s:
        row = campaigns.get(s, business_id, campaign_id)
        if row is None:
            raise UserError(f"campaign {campaign_id} not found for business {business_id}")
        _echo(report.summary(s, row, rt.request_limits), as_json)


HELP = {
    "pause": "Pause a campaign: no new calls; live calls go on.",
    "resume": "Resume a paused campaign.",
    "cancel": "Cancel a campaign: targets not yet dialed are cancelled; live calls finish.",
}


def _control_command(action: str):
    @group.command(action, help=HELP[action])
    @click.argument("campaign_id", type=int)
    @business_option
    def command(campaign_id: int, business_id: int) -> None:
        from prosaas_outbound_calls import campaigns
        from prosaas_outbound_calls.dialer import wake

        rt = _runtime()
        with rt.session() as s:
            changed, row = campaigns.control(s, business_id, campaign_id, action)
        if row is None:
            raise UserError(f"campaign {campaign_id} not found for business {business_id}")
        if not changed:
            raise UserError(f"cannot {action} campaign {campaign_id}: it is {row.state}")
        if action == "resume":
            wake(rt.request_limits.slots.redis, "cli")
        click.echo(f"campaign {campaign_id}: {row.state}")

    return command


for _action in ("pause", "resume", "cancel"):
    _control_command(_action)


def _phone_list(name: str, table_name: str, extra: str, doc: str) -> None:
    """`numbers` and `dnc`: add, remove, list phone numbers of a business."""

    @group.group(name, help=doc)
    def sub() -> None:
        pass

    def table():
        from prosaas_outbound_calls import tables

        return getattr(tables, table_name)

    @sub.command("add")
    @business_option
    @click.argument("phone")
    @click.option(f"--{extra}", "note", default=None, help=f"a {extra} for the number")
    def add(business_id: int, phone: str, note: str | None) -> None:
        from prosaas_outbound_calls.campaigns import dialect_insert, now

        if note is not None and len(note) > 200:
            raise UserError(f"--{extra} is longer than 200 characters")
        number = _phone(phone)
        with _runtime().session() as s:
            _business(s, business_id)
            t = table()
            s.execute(
                dialect_insert(s)(t)
                .values(business_id=business_id, phone=number, created_at=now(), **{extra: note})
                .on_conflict_do_nothing()
            )
        click.echo(f"added {number}")

    @sub.command("remove")
    @business_option
    @click.argument("phone")
    def remove(business_id: int, phone: str) -> None:
        from sqlalchemy import delete

        number = _phone(phone)
        t = table()
        with _runtime().session() as s:
            n = s.execute(
                delete(t).where(t.c.business_id == business_id, t.c.phone == number)
            ).rowcount
        if not n:
            raise UserError(f"{number} is not in the list of business {business_id}")
        click.echo(f"removed {number}")

    @sub.command("list")
    @business_option
    @json_option
    def list_(business_id: int, as_json: bool) -> None:
        from sqlalchemy import select

        t = table()
        with _runtime().session() as s:
            rows = s.execute(
                select(t.c.phone, getattr(t.c, extra))
                .where(t.c.business_id == business_id)
                .order_by(t.c.phone)
            ).all()
        if as_json:
            click.echo(json.dumps([{"phone": p, extra: n} for p, n in rows]))
        for p, n in [] if as_json else rows:
            click.echo(f"{p}\t{n or ''}")


_phone_list("numbers", "caller_ids", "label", "The business's caller ids (E.164).")
_phone_list("dnc", "do_not_call", "reason", "The business's do-not-call list (E.164).")


@group.command("limits")
@business_option
@click.option("--max-concurrent", type=click.IntRange(1, 1000), default=None)
@click.option("--max-cps", type=click.FloatRange(0.01, 100), default=None)
@click.option("--clear", is_flag=True, help="Back to the settings' defaults.")
@json_option
def limits(
    business_id: int, max_concurrent: int | None, max_cps: float | None, clear: bool, as_json: bool
) -> None:
    """Show or set a business's caps (live calls at once, calls per second)."""
    from sqlalchemy import delete

    from prosaas_outbound_calls.campaigns import business_caps, dialect_insert, now
    from prosaas_outbound_calls.config import OutboundConfig
    from prosaas_outbound_calls.tables import business_limits as L

    rt = _runtime()
    with rt.session() as s:
        _business(s, business_id)
        if clear:
            s.execute(delete(L).where(L.c.business_id == business_id))
        elif max_concurrent is not None or max_cps is not None:
            values = {
                k: v
                for k, v in (("max_concurrent", max_concurrent), ("max_calls_per_second", max_cps))
                if v is not None
            }
            ins = dialect_insert(s)(L).values(business_id=business_id, updated_at=now(), **values)
            s.execute(
                ins.on_conflict_do_update(
                    index_elements=["business_id"], set_={**values, "updated_at": now()}
                )
            )
        caps = business_caps(s, business_id, OutboundConfig.from_settings(rt.settings))
    _echo({"business_id": business_id, **caps}, as_json)
