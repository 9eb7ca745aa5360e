"""`prosaas businesses` and `prosaas tokens`: the token is printed once, only its hash stored."""

from __future__ import annotations

import hashlib
import json

from sqlalchemy import text

from prosaas_core.tokens import resolve_token


def test_business_and_token_lifecycle(cli, runtime):
    created = json.loads(cli("businesses", "create", "Acme Calls", "--json", check=True).stdout)
    bid = created["id"]
    assert isinstance(bid, int) and created["name"] == "Acme Calls"
    listed = json.loads(cli("businesses", "list", "--json", check=True).stdout)
    assert [b["id"] for b in listed] == [bid]

    out = json.loads(cli("tokens", "create", "--business", str(bid), "--json", check=True).stdout)
    token = out["token"]
    assert token.startswith("psk_") and out["business_id"] == bid
    with runtime.session() as s:
        assert resolve_token(s, token) == bid
        stored = s.execute(text("SELECT token_hash, prefix FROM api_tokens")).all()
    assert stored == [(hashlib.sha256(token.encode()).hexdigest(), out["prefix"])]
    assert token not in json.dumps([list(r) for r in stored])

    plain = cli("tokens", "create", "--business", str(bid), "--name", "ci", check=True)
    second = plain.stdout.strip()
    assert second.startswith("psk_") and second != token
    rows = json.loads(cli("tokens", "list", "--business", str(bid), "--json", check=True).stdout)
    assert [r["name"] for r in rows] == [None, "ci"] and all(r["revoked_at"] is None for r in rows)
    assert all(second not in line for line in cli("tokens", "list", "--business", str(bid)).stdout)

    assert cli("tokens", "revoke", out["prefix"], check=True).stdout.strip() == "revoked 1 token"
    with runtime.session() as s:
        assert resolve_token(s, token) is None
        assert resolve_token(s, second) == bid
    again = cli("tokens", "revoke", out["prefix"])
    assert again.returncode == 1 and again.stderr.startswith("error: no live token matches")
    assert cli("tokens", "revoke", second, check=True).stdout.strip() == "revoked 1 token"


def test_user_mistakes_are_one_line_errors(cli, runtime):
    for args, message in [
        (("tokens", "create", "--business", "999999"), "error: business 999999 not found"),
        (("businesses", "create", "  "), "error: business name must be 1 to 200 characters"),
    ]:
        proc = cli(*args)
        assert proc.returncode == 1
        assert proc.stderr.strip() == message
    proc = cli("tokens", "create", "--business", "abc")
    assert proc.returncode == 2 and "abc" in proc.stderr
