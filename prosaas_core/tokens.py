"""API tokens: random, shown once, stored only as a SHA-256 hash.

Business tokens (``psk_``, table ``api_tokens``) are scoped to one business and are what the
HTTP API accepts. Admin tokens (``psa_``, table ``prosaas_admin_tokens``) are for operators
signing in to the dashboard; the API never accepts them.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.orm import Session

from prosaas_core.db import autocommit
from prosaas_core.errors import NotFoundError
from prosaas_core.models import ApiToken, Business
from prosaas_core.store import Queries, connect

if TYPE_CHECKING:
    from sqlalchemy import CursorResult

PREFIX = "psk_"
ADMIN_PREFIX = "psa_"
#: characters of a token kept (in clear) to recognise it by in lists and in `revoke`
SHOWN = 6

# A Core table rather than a model: only this module reads or writes it (migration 0005).
admin_tokens = Table(
    "prosaas_admin_tokens",
    MetaData(),
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
    Column("token_hash", String(64), unique=True, nullable=False),
    Column("prefix", String(12), nullable=False),
    Column("name", String(200)),
    Column("created_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, business_id: int, name: str | None = None) -> str:
    """Create a token for the business and return it; only its hash is stored."""
    if session.get(Business, business_id) is None:
        raise NotFoundError(f"business {business_id} not found")
    token = PREFIX + secrets.token_urlsafe(32)
    session.add(
        ApiToken(
            business_id=business_id,
            token_hash=hash_token(token),
            prefix=token[: len(PREFIX) + SHOWN],
            name=name,
        )
    )
    session.flush()
    return token


def resolve_token(session: Session, token: str) -> int | None:
    """The business id a live token belongs to, or None (see `lookup_token`)."""
    digest = hash_token(token)
    return _live(session.execute(_BY_HASH, {"digest": digest}).first(), digest)


_BY_HASH = select(ApiToken.business_id, ApiToken.token_hash, ApiToken.revoked_at).where(
    ApiToken.token_hash == bindparam("digest")
)


Q = Queries.load(Path(__file__).with_name("queries.sql"))


def lookup_token(engine: Engine, token: str) -> int | None:
    """The business id a live token belongs to, or None: one indexed SELECT, in autocommit
    (no BEGIN/COMMIT round trips: this runs on every API request).

    The lookup is by hash (a unique index); the final comparison is constant-time so the
    answer's timing does not depend on how much of the hash matched. Nothing is cached, so a
    revoked token fails on the very next lookup.
    """
    digest = hash_token(token)
    with connect(engine) as db:
        found = db.one(Q.token_by_hash, {"digest": digest})
    return _live(_Row(*found) if found else None, digest)


class _Row(NamedTuple):
    business_id: int
    token_hash: str
    revoked_at: datetime | None


def _live(row: Any, digest: str) -> int | None:
    if row is None or row.revoked_at is not None:
        return None
    return row.business_id if hmac.compare_digest(row.token_hash, digest) else None


def revoke_token(session: Session, token: str) -> int:
    """Revoke a business or admin token, by the token itself or by its printed prefix;
    returns how many were revoked."""
    if token.startswith(ADMIN_PREFIX):
        return _revoke_admin(session, token)
    if token.startswith(PREFIX) and len(token) > len(PREFIX) + SHOWN:
        rows = session.scalars(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    else:
        rows = session.scalars(select(ApiToken).where(ApiToken.prefix == token))
    n = 0
    for row in rows:
        if row.revoked_at is None:
            row.revoked_at = datetime.now(UTC)
            n += 1
    return n


def create_admin_token(session: Session, name: str | None = None) -> tuple[str, str]:
    """Create an operator token for the dashboard; return (token, prefix). Only its hash is
    stored."""
    token = ADMIN_PREFIX + secrets.token_urlsafe(32)
    prefix = token[: len(ADMIN_PREFIX) + SHOWN]
    session.execute(
        insert(admin_tokens).values(token_hash=hash_token(token), prefix=prefix, name=name)
    )
    return token, prefix


def lookup_admin_token(engine: Engine, token: str) -> int | None:
    """The id of the live admin token `token` is, or None (constant-time final compare)."""
    digest = hash_token(token)
    t = admin_tokens
    with autocommit(engine) as conn:
        row = conn.execute(
            select(t.c.id, t.c.token_hash, t.c.revoked_at).where(t.c.token_hash == digest)
        ).first()
    if row is None or row.revoked_at is not None:
        return None
    return row.id if hmac.compare_digest(row.token_hash, digest) else None


def admin_token_live(engine: Engine, token_id: int) -> bool:
    """Whether the admin token with this id exists and is not revoked (a signed-in operator's
    session ends when its token is revoked)."""
    t = admin_tokens
    with autocommit(engine) as conn:
        row = conn.execute(select(t.c.revoked_at).where(t.c.id == token_id)).first()
    return row is not None and row.revoked_at is None


def list_admin_tokens(session: Session) -> list[dict[str, Any]]:
    t = admin_tokens
    return [
        {
            "prefix": r.prefix,
            "name": r.name,
            "created_at": r.created_at.isoformat(),
            "revoked_at": r.revoked_at.isoformat() if r.revoked_at else None,
        }
        for r in session.execute(select(t).order_by(t.c.id))
    ]


def _revoke_admin(session: Session, token: str) -> int:
    t = admin_tokens
    if len(token) > len(ADMIN_PREFIX) + SHOWN:
        match = t.c.token_hash == hash_token(token)
    else:
        match = t.c.prefix == token
    return cast(
        "CursorResult[Any]",
        session.execute(
            update(t).where(match, t.c.revoked_at.is_(None)).values(revoked_at=datetime.now(UTC))
        ),
    ).rowcount


def lookup_business_token(engine: Engine, token: str) -> tuple[int, int] | None:
    """(token id, business id) of a live business token, or None: what a dashboard sign-in
    keeps (the id, never the token) to check on each request that it is still live."""
    digest = hash_token(token)
    t = ApiToken
    with autocommit(engine) as conn:
        row = conn.execute(
            select(t.id, t.business_id, t.token_hash, t.revoked_at).where(t.token_hash == digest)
        ).first()
    if row is None or _live(row, digest) is None:
        return None
    return row.id, row.business_id


def business_token_live(engine: Engine, token_id: int, business_id: int) -> bool:
    """Whether business token `token_id` of `business_id` is still live."""
    t = ApiToken
    with autocommit(engine) as conn:
        row = conn.execute(
            select(t.revoked_at).where(t.id == token_id, t.business_id == business_id)
        ).first()
    return row is not None and row.revoked_at is None
