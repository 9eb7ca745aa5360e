"""API tokens: random, shown once, stored only as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import Engine, bindparam, select
from sqlalchemy.orm import Session

from prosaas_core.db import autocommit, autocommit_cursor
from prosaas_core.errors import NotFoundError
from prosaas_core.models import ApiToken, Business

PREFIX = "psk_"


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
            prefix=token[: len(PREFIX) + 6],
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


_BY_HASH_SQL = "SELECT business_id, token_hash, revoked_at FROM api_tokens WHERE token_hash = %s"


def lookup_token(engine: Engine, token: str) -> int | None:
    """The business id a live token belongs to, or None: one indexed SELECT, in autocommit
    (no BEGIN/COMMIT round trips: this runs on every API request).

    The lookup is by hash (a unique index); the final comparison is constant-time so the
    answer's timing does not depend on how much of the hash matched. Nothing is cached, so a
    revoked token fails on the very next lookup.
    """
    digest = hash_token(token)
    if engine.dialect.name == "postgresql":
        with autocommit_cursor(engine) as cur:
            cur.execute(_BY_HASH_SQL, (digest,))
            found = cur.fetchone()
        row = _Row(*found) if found else None
    else:
        with autocommit(engine) as conn:
            row = conn.execute(_BY_HASH, {"digest": digest}).first()
    return _live(row, digest)


class _Row(NamedTuple):
    business_id: int
    token_hash: str
    revoked_at: datetime | None


def _live(row: Any, digest: str) -> int | None:
    if row is None or row.revoked_at is not None:
        return None
    return row.business_id if hmac.compare_digest(row.token_hash, digest) else None


def revoke_token(session: Session, token: str) -> int:
    """Revoke by the token itself or by its printed prefix; returns how many were revoked."""
    if token.startswith(PREFIX) and len(token) > len(PREFIX) + 6:
        rows = session.scalars(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    else:
        rows = session.scalars(select(ApiToken).where(ApiToken.prefix == token))
    n = 0
    for row in rows:
        if row.revoked_at is None:
            row.revoked_at = datetime.now(UTC)
            n += 1
    return n
