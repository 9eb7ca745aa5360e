"""Named queries (prosaas_core.store): one text per operation, a dialect variant only where the
SQL must differ, every shipped query valid on both databases."""

from __future__ import annotations

from pathlib import Path

import pytest

import prosaas_core
from prosaas_core.store import DIALECTS, Queries

SQL = """\
-- the file's own comments, before any query, are ignored

-- pick --
-- What it does (comment lines are dropped from the text).
SELECT id FROM t
WHERE due <= %(now)s AND note LIKE 'a%%'
FOR UPDATE SKIP LOCKED  --@postgresql

-- both --
WITH x AS (UPDATE t SET n = n + 1 WHERE id = %(id)s RETURNING id)
SELECT id FROM x

-- both@sqlite --
UPDATE t SET n = n + 1 WHERE id = %(id)s;
SELECT id FROM t WHERE id = %(id)s
"""


def test_dialect_lines_and_whole_variants(tmp_path: Path):
    path = tmp_path / "q.sql"
    path.write_text(SQL)
    q = Queries.load(path)
    assert q.pick.sql["postgresql"] == (
        "SELECT id FROM t\nWHERE due <= %(now)s AND note LIKE 'a%%'\nFOR UPDATE SKIP LOCKED",
    )
    assert q.pick.sql["sqlite"] == ("SELECT id FROM t\nWHERE due <= :now AND note LIKE 'a%'",)
    assert len(q.both.sql["postgresql"]) == 1
    assert q.both.sql["sqlite"] == (
        "UPDATE t SET n = n + 1 WHERE id = :id",
        "SELECT id FROM t WHERE id = :id",
    )
    with pytest.raises(AttributeError, match="no query named 'nope'"):
        q.nope  # noqa: B018


@pytest.mark.parametrize(
    "text, message",
    [
        ("-- a --\nSELECT 1\n-- a --\nSELECT 2\n", "defined twice"),
        ("-- a@oracle --\nSELECT 1\n", "unknown dialect"),
        ("-- a@sqlite --\nSELECT 1\n", "variants without a query"),
        ("-- a --\nSELECT 1  --@oracle\n", "unknown dialect marker"),
    ],
)
def test_mistakes_in_a_query_file_are_refused_when_it_loads(tmp_path, text, message):
    path = tmp_path / "q.sql"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        Queries.load(path)


def _shipped() -> list[Path]:
    roots = [Path(prosaas_core.__file__).parent]
    import prosaas_recordings

    roots.append(Path(prosaas_recordings.__file__).parent)
    return sorted(p for root in roots for p in root.rglob("*.sql"))


@pytest.mark.parametrize("path", _shipped(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_query_compiles_on_both_databases(path: Path, pg_url: str, tmp_path):
    """Each statement of each query is prepared (EXPLAIN) on a migrated PostgreSQL and
    SQLite database: a typo or a dialect slip fails here, not in production."""
    from sqlalchemy import create_engine

    from prosaas_core import Runtime, Settings, migrate
    from prosaas_core.plugins import get_plugin_manager

    queries = list(Queries.load(path))
    assert queries
    for url in (pg_url, f"sqlite:///{tmp_path / 'q.db'}"):
        rt = Runtime(Settings.from_env({"DATABASE_URL": url}), pm=get_plugin_manager())
        migrate.upgrade(rt)
        rt.close()
        engine = create_engine(url)
        dialect = engine.dialect.name
        assert dialect in DIALECTS
        raw = engine.raw_connection()
        try:
            for query in queries:
                for sql in query.sql[dialect]:
                    names = _params(sql, dialect)
                    cur = raw.cursor()
                    cur.execute(f"EXPLAIN {sql}", dict.fromkeys(names))
                    cur.close()
        finally:
            raw.rollback()
            raw.close()
            engine.dispose()


def _params(sql: str, dialect: str) -> set[str]:
    import re

    pattern = r"%\((\w+)\)s" if dialect == "postgresql" else r"(?<!:):(\w+)"
    return set(re.findall(pattern, sql))
