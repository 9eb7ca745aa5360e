"""The generated chk_job_type on PostgreSQL: planned from the installed plugins and the rows,
applied as DROP + ADD NOT VALID then VALIDATE, recorded as numbered migrations."""

from __future__ import annotations

import types

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError

from prosaas_core import JobType, hookimpl, migrate
from prosaas_core.migrate import constraint as ck
from prosaas_core.plugins import get_plugin_manager
from prosaas_core.runtime import Runtime
from prosaas_core.settings import Settings


def _noop(ctx):
    return None


def make_plugin(name: str, *job_types: str) -> types.ModuleType:
    mod = types.ModuleType(name)

    @hookimpl
    def prosaas_job_types():
        return [JobType(t, _noop) for t in job_types]

    mod.prosaas_job_types = prosaas_job_types
    return mod


def runtime_with(env: dict, *plugins: types.ModuleType) -> Runtime:
    pm = get_plugin_manager(load_entrypoints=False)
    for p in plugins:
        pm.register(p, name=p.__name__)
    return Runtime(Settings.from_env(env), pm=pm)


def constraint_def(url: str) -> tuple[set[str], bool]:
    engine = create_engine(url)
    with engine.connect() as conn:
        state = ck.read_state(conn)
    engine.dispose()
    assert state.allowed is not None
    return set(state.allowed), state.validated


def insert_job(conn, job_type: str, business_id: int) -> None:
    conn.execute(
        text("INSERT INTO background_jobs (business_id, job_type) VALUES (:b, :t)"),
        {"b": business_id, "t": job_type},
    )


def test_registered_plugins_drive_constraint_and_drift(env, pg_url):
    alpha = make_plugin("alpha", "t_alpha")
    beta = make_plugin("beta", "t_beta", "t_gamma")
    rt1 = runtime_with(env, alpha)
    result = migrate.upgrade(rt1)
    assert result.migration == 1 and result.added == ["t_alpha"]
    assert "0001_core" in result.revisions
    assert migrate.drift(rt1) == []
    assert constraint_def(pg_url) == ({"t_alpha"}, True)

    rt2 = runtime_with(env, alpha, beta)
    assert migrate.drift(rt2) == [
        "job type 't_beta' is installed but not allowed by chk_job_type: run `prosaas db upgrade`",
        "job type 't_gamma' is installed but not allowed by chk_job_type: run `prosaas db upgrade`",
    ]
    assert "ADD CONSTRAINT chk_job_type CHECK (job_type IN ('t_alpha', 't_beta', 't_gamma'))" in (
        migrate.plan_sql(rt2)
    )
    result = migrate.upgrade(rt2)
    assert (result.migration, result.added, result.removed) == (2, ["t_beta", "t_gamma"], [])
    assert migrate.drift(rt2) == []
    assert constraint_def(pg_url) == ({"t_alpha", "t_beta", "t_gamma"}, True)

    again = migrate.upgrade(rt2)
    assert again.migration is None and not again.changed
    hist = migrate.history(rt2)
    assert [h["number"] for h in hist] == [1, 2]
    assert hist[1]["added"] == ["t_beta", "t_gamma"] and hist[1]["removed"] == []
    assert "NOT VALID" in hist[1]["sql"] and "VALIDATE CONSTRAINT" in hist[1]["sql"]
    assert hist[1]["pid"] > 0 and hist[1]["host"]
    for rt in (rt1, rt2):
        rt.close()


def test_removed_type_with_rows_stays_allowed_unused_one_is_dropped(env, pg_url, caplog):
    rt = runtime_with(env, make_plugin("alpha", "t_alpha"), make_plugin("beta", "t_beta"))
    migrate.upgrade(rt)
    with rt.engine.begin() as conn:
        bid = conn.execute(text("INSERT INTO businesses (name) VALUES ('b') RETURNING id")).scalar()
        for _ in range(3):
            insert_job(conn, "t_beta", bid)
    rt.close()

    rt = runtime_with(env, make_plugin("alpha", "t_alpha"))  # beta removed
    result = migrate.upgrade(rt)
    assert result.orphans == {"t_beta": 3} and result.migration is None
    assert "'t_beta' is not provided by any installed plugin but 3 rows use it" in caplog.text
    assert constraint_def(pg_url) == ({"t_alpha", "t_beta"}, True)
    with rt.engine.begin() as conn:
        n = conn.execute(text("UPDATE background_jobs SET status = 'cancelled'")).rowcount
        assert n == 3
    with pytest.raises(IntegrityError, match="chk_job_type"), rt.engine.begin() as conn:
        insert_job(conn, "t_never_installed", bid)

    # Once no row uses it, the next upgrade drops it: a numbered migration that removes it.
    with rt.engine.begin() as conn:
        conn.execute(text("DELETE FROM background_jobs"))
    result = migrate.upgrade(rt)
    assert (result.migration, result.removed) == (2, ["t_beta"])
    assert constraint_def(pg_url) == ({"t_alpha"}, True)
    rt.close()


def test_interrupted_after_swap_is_validated_by_next_run(env, pg_url):
    """The state a migrator SIGKILLed between ADD NOT VALID and VALIDATE leaves behind."""
    rt = runtime_with(env, make_plugin("alpha", "t_alpha"))
    migrate.upgrade(rt)
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        plan = ck.make_plan(conn, {"t_alpha", "t_new"}, ck.read_state(conn))
        ck.swap_postgres(conn, plan)  # ... and the process dies here
    engine.dispose()
    assert constraint_def(pg_url) == ({"t_alpha", "t_new"}, False)
    rt2 = runtime_with(env, make_plugin("alpha", "t_alpha"), make_plugin("new", "t_new"))
    assert migrate.drift(rt2) == [
        "chk_job_type is NOT VALID (an interrupted migration): run `prosaas db upgrade`"
    ]
    result = migrate.upgrade(rt2)
    assert result.migration == 2  # completes migration 2, records nothing new
    assert constraint_def(pg_url) == ({"t_alpha", "t_new"}, True)
    assert [h["number"] for h in migrate.history(rt2)] == [1, 2]
    assert migrate.drift(rt2) == []
    for r in (rt, rt2):
        r.close()


def test_killed_between_swap_and_comment_is_read_then_commented_by_next_run(env, pg_url):
    """A migrator killed after the swap committed but before the comment: the allowed set is
    read by printing the constraint, and the next upgrade validates and comments it."""
    rt = runtime_with(env, make_plugin("alpha", "t_alpha"))
    migrate.upgrade(rt)
    engine = create_engine(pg_url)
    with engine.connect() as conn:
        plan = ck.make_plan(conn, {"t_alpha", "t_new"}, ck.read_state(conn))
        ck.swap_ddl(conn, plan)  # committed on its own connection; the process dies here
        conn.rollback()
        state = ck.read_state(conn)
        conn.rollback()
    assert (state.allowed, state.validated, state.annotated) == ({"t_alpha", "t_new"}, False, False)
    rt2 = runtime_with(env, make_plugin("alpha", "t_alpha"), make_plugin("new", "t_new"))
    assert migrate.upgrade(rt2).migration == 2
    with engine.connect() as conn:
        state = ck.read_state(conn)
    assert (state.allowed, state.validated, state.annotated) == ({"t_alpha", "t_new"}, True, True)
    assert "COMMENT ON CONSTRAINT" in migrate.history(rt2)[-1]["sql"]
    engine.dispose()
    for r in (rt, rt2):
        r.close()


def test_no_plugins_allows_nothing(env, pg_url):
    rt = runtime_with(env)
    migrate.upgrade(rt)
    assert constraint_def(pg_url) == (set(), True)
    with rt.engine.begin() as conn:
        bid = conn.execute(text("INSERT INTO businesses (name) VALUES ('b') RETURNING id")).scalar()
    with pytest.raises(IntegrityError), rt.engine.begin() as conn:
        insert_job(conn, "anything", bid)
    rt.close()


def test_parse_and_render_round_trip():
    values = {"a", "b_c", "it's"}
    assert ck.parse_allowed(ck.check_sql(values)) == values
    pg = "CHECK (((job_type)::text = ANY ((ARRAY['x'::character varying, 'y'::character varying])"
    assert ck.parse_allowed(pg) == {"x", "y"}
    assert ck.check_sql([]) == "1 = 0"


def test_hand_written_legacy_constraint_is_taken_over(env, pg_url):
    """The post-mortem: a hand-written chk_job_type allowing only 'delete_receipts_all'."""
    rt = runtime_with(env)
    migrate.upgrade(rt)
    with rt.engine.begin() as conn:
        conn.execute(text("ALTER TABLE background_jobs DROP CONSTRAINT chk_job_type"))
        conn.execute(
            text(
                "ALTER TABLE background_jobs ADD CONSTRAINT chk_job_type"
                " CHECK (job_type IN ('delete_receipts_all'))"
            )
        )
        bid = conn.execute(text("INSERT INTO businesses (name) VALUES ('b') RETURNING id")).scalar()
        insert_job(conn, "delete_receipts_all", bid)
    rt.close()
    rt = runtime_with(env, make_plugin("leads", "delete_leads", "update_leads"))
    assert migrate.drift(rt) == [
        f"job type '{t}' is installed but not allowed by chk_job_type: run `prosaas db upgrade`"
        for t in ("delete_leads", "update_leads")
    ]
    result = migrate.upgrade(rt)
    assert result.orphans == {"delete_receipts_all": 1}
    assert constraint_def(pg_url) == ({"delete_leads", "update_leads", "delete_receipts_all"}, True)
    with rt.engine.begin() as conn:
        insert_job(conn, "delete_leads", bid)
    assert migrate.drift(rt) == []
    rt.close()
