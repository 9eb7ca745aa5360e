"""Every operational query stays bounded with 1,000,000 finished rows, and pruning them keeps
the history, spares active rows and never makes a writer wait.

One module-scoped database: 1,000,000 finished jobs over 90 days for 200 businesses, generated
in SQL, plus a few hundred active ones and a small business with 20 jobs. The EXPLAIN tests
capture the SQL each operation really sends (through the API, the CLI's functions, the
sweeper, doctor, the constraint plan) and assert on its plan: every read of background_jobs
is an index scan that reads rows bounded by the page or by the active rows, not by the
history. The pruning test runs last: it deletes most of the rows.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest
from sqlalchemy import event, text

from prosaas_core.api.app import create_app
from prosaas_core.jobs import control
from prosaas_core.jobs.history import roll_up
from prosaas_core.jobs.prune import prune
from prosaas_core.plugins import get_plugin_manager
from prosaas_core.runtime import Runtime
from prosaas_core.settings import Settings
from prosaas_core.testing import bearer, business_with_token, create_pg_database, drop_pg_database

pytestmark = pytest.mark.slow

ROWS = 1_000_000
#: rows a bounded read of background_jobs may touch: the active rows (350), a page (50),
#: one probe per job type; far below the history
BOUND = 2_000
TYPES = ("acme_echo", "acme_sleep", "delete_leads", "broadcast")

GENERATE = f"""
INSERT INTO businesses (name) SELECT 'big-' || g FROM generate_series(1, 200) g;
WITH big AS (SELECT array_agg(id ORDER BY id) AS ids FROM businesses WHERE name LIKE 'big-%')
INSERT INTO background_jobs (business_id, job_type, queue, status, payload, result, attempts,
    processed, total, created_at, updated_at, started_at, finished_at, heartbeat_at, worker)
SELECT big.ids[1 + g % 200], (ARRAY{list(TYPES)})[1 + (g / 7) % 4], 'default',
    CASE WHEN g % 20 = 0 THEN 'failed' WHEN g % 50 = 1 THEN 'cancelled' ELSE 'succeeded' END,
    jsonb_build_object('lead_ids', jsonb_build_array(g, g + 1, g + 2), 'note', md5(g::text)),
    jsonb_build_object('done', g % 100), 1, 100, 100,
    t - interval '3 seconds', t, t - interval '2 seconds', t, t, 'host-1:123'
FROM big, generate_series(1, {ROWS}) g,
     LATERAL (SELECT now() - interval '10 minutes' - g * interval '7.776 seconds' AS t) x;
"""
ACTIVE = """
INSERT INTO background_jobs (business_id, job_type, queue, status, payload, created_at,
    started_at, heartbeat_at, worker, finished_at)
SELECT b.id, 'acme_echo', 'default', CASE WHEN g % 7 = 0 THEN 'running' ELSE 'queued' END,
    '{}'::jsonb, now() - interval '1 hour', NULL, now(), 'host-1:123',
    -- a retried job once finished: an old finished_at on an active row (pruning must not care)
    CASE WHEN g % 5 = 0 THEN now() - interval '60 days' END
FROM generate_series(1, 350) g JOIN businesses b ON b.name = 'big-' || (1 + g % 200);
"""


@pytest.fixture(scope="module")
def big() -> Iterator[dict[str, Any]]:
    """The 1M-row database, migrated, vacuumed, rolled up; with a small business's token."""
    import os

    import redis

    from prosaas_core import migrate
    from prosaas_core.testing import REDIS_DB, REDIS_SERVER

    url = create_pg_database()
    redis_url = f"{REDIS_SERVER}/{REDIS_DB}"
    redis.Redis.from_url(redis_url).flushdb()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROSAAS_")}
    env.update(DATABASE_URL=url, REDIS_URL=redis_url, PROSAAS_PRUNE_PAUSE="0")
    rt = Runtime(Settings.from_env(env), pm=get_plugin_manager(load_entrypoints=True))
    migrate.upgrade(rt)
    small_id, token = business_with_token(rt, "small")
    dsn = url.replace("+psycopg2", "")
    raw = psycopg2.connect(dsn)
    raw.autocommit = True
    with raw.cursor() as cur:
        t0 = time.monotonic()
        # building the migration's indexes once after the load is much faster than updating
        # them row by row: drop them, load, re-run their own definitions
        cur.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'background_jobs'"
            " AND indexname <> 'pk_background_jobs'"
        )
        indexes = cur.fetchall()
        cur.execute("SET maintenance_work_mem = '256MB'")
        for name, _ in indexes:
            cur.execute(f"DROP INDEX {name}")
        cur.execute(GENERATE)
        for _, definition in indexes:
            cur.execute(definition)
        cur.execute(ACTIVE)
        cur.execute(
            "INSERT INTO background_jobs (business_id, job_type, status, payload, created_at,"
            " started_at, finished_at) SELECT %s, 'acme_echo',"
            " CASE WHEN g <= 5 THEN 'queued' ELSE 'succeeded' END, '{}', now(),"
            " CASE WHEN g > 5 THEN now() - interval '1 day' END,"
            " CASE WHEN g > 5 THEN now() - interval '1 day' END FROM generate_series(1, 20) g",
            (small_id,),
        )
        cur.execute("VACUUM ANALYZE background_jobs")
        generated = time.monotonic() - t0
    roll_up(rt)
    yield {"rt": rt, "url": dsn, "raw": raw, "small": small_id, "token": token, "gen": generated}
    raw.close()
    rt.close()
    drop_pg_database(url)


class Capture:
    """The statements (with their parameters) the runtime's engine sends to background_jobs."""

    def __init__(self, rt: Runtime) -> None:
        self.engine = rt.engine
        self.statements: list[tuple[str, Any]] = []

    def _on(self, _conn, _cursor, statement, parameters, _context, executemany) -> None:
        if "background_jobs" in statement and not executemany:
            self.statements.append((statement, parameters))

    def __enter__(self) -> Capture:
        event.listen(self.engine, "before_cursor_execute", self._on)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._on)


def _scans(plan: dict) -> Iterator[dict]:
    if plan.get("Relation Name") == "background_jobs" and plan["Node Type"] != "ModifyTable":
        yield plan
    for child in plan.get("Plans", ()):
        yield from _scans(child)


def explain(big: dict, statements: list[tuple[str, Any]]) -> list[dict]:
    """EXPLAIN ANALYZE of each statement (rolled back) -> its background_jobs scan nodes."""
    assert statements, "the operation sent no statement to background_jobs"
    out = []
    raw = psycopg2.connect(big["url"])
    try:
        for sql, params in statements:
            if not re.match(r"\s*(WITH|SELECT|UPDATE|DELETE)", sql, re.I):
                continue
            with raw.cursor() as cur:
                cur.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params)
                plan = cur.fetchone()[0][0]["Plan"]
            raw.rollback()
            for node in _scans(plan):
                out.append({"sql": sql, **node})
    finally:
        raw.close()
    return out


def assert_bounded(nodes: list[dict], bound: int = BOUND) -> None:
    assert nodes, "no scan of background_jobs in the plans"
    for n in nodes:
        where = f"{n['Node Type']} on {n.get('Index Name')}: {n['sql'][:300]}"
        assert n["Node Type"] in ("Index Scan", "Index Only Scan", "Bitmap Heap Scan"), where
        touched = (n["Actual Rows"] + n.get("Rows Removed by Filter", 0)) * n["Actual Loops"]
        touched += n.get("Rows Removed by Index Recheck", 0)
        assert touched <= bound, f"{touched} rows read by {where}"


def test_the_data_is_there(big):
    with big["rt"].engine.connect() as conn:
        n = conn.execute(text("SELECT count(*) FROM background_jobs")).scalar()
    assert n == ROWS + 350 + 20


def test_api_jobs_for_a_small_business_with_and_without_filters(big):
    client = create_app(runtime=big["rt"]).test_client()
    h = bearer(big["token"])
    for query, expect in (("", 20), ("?status=queued", 5), ("?job_type=acme_echo", 20),
                          ("?status=succeeded&job_type=acme_echo", 15)):  # fmt: skip
        with Capture(big["rt"]) as cap:
            resp = client.get("/api/jobs" + query, headers=h)
        assert resp.status_code == 200 and len(resp.get_json()["items"]) == expect, query
        assert_bounded(explain(big, cap.statements))


def test_jobs_list_default_and_for_a_business(big):
    rt = big["rt"]
    for kwargs in ({}, {"business_id": big["small"]}, {"status": "running"}):
        with Capture(rt) as cap:
            rows = control.list_jobs(rt, **kwargs)
        assert rows, kwargs
        assert_bounded(explain(big, cap.statements))


def test_metrics_read_active_rows_and_totals_not_the_history(big):
    client = create_app(runtime=big["rt"]).test_client()
    with Capture(big["rt"]) as cap:
        body = client.get("/metrics").get_data(as_text=True)
    assert 'prosaas_metrics_source_up{source="database"} 1.0' in body
    finished = _finished(body)
    assert sum(finished.values()) == ROWS + 15  # every finished row, from the totals
    assert_bounded(explain(big, cap.statements))


def test_sweeper_and_doctor(big):
    from prosaas_core.cli.doctor import diagnose
    from prosaas_core.jobs.sweeper import sweep

    rt = big["rt"]
    with Capture(rt) as cap:
        sweep(rt, leases=False)
        diagnose(rt)
    assert_bounded(explain(big, cap.statements))


def test_constraint_plan_reads_one_probe_per_type(big):
    from prosaas_core.migrate.constraint import (
        COUNT_CAP,
        ConstraintState,
        make_plan,
        read_state,
    )

    rt = big["rt"]
    installed = set(rt.registry.job_types)
    with rt.engine.connect() as conn, Capture(rt) as cap:
        # a constraint not validated yet: which types do the rows use?
        plan = make_plan(conn, installed, ConstraintState(True, frozenset(installed), False))
        assert plan.orphans == {}
        # a removed plugin (a type with few rows): count that type's rows only
        state = read_state(conn)
        plan = make_plan(conn, installed - {"acme_sleep"} | {"acme_count"}, state)
    assert plan.orphans["acme_sleep"] == COUNT_CAP + 1  # "more than COUNT_CAP": still used
    nodes = explain(big, cap.statements)
    loose = [n for n in nodes if "RECURSIVE" in n["sql"]]
    assert loose and all(n["Index Name"] == "ix_background_jobs_job_type_id" for n in loose)
    assert_bounded(loose)  # one short probe per type, never a pass over every row
    counting = [n for n in nodes if "RECURSIVE" not in n["sql"]]
    assert counting
    for n in counting:  # a short capped range of the (job_type, id) index, whatever the history
        assert n["Node Type"] == "Index Only Scan", n
        assert n["Actual Rows"] <= COUNT_CAP + 1 <= 101, n  # 101 entries, not 10,001
        assert n.get("Heap Fetches", 0) <= 101, n
        assert n["Index Name"] == "ix_background_jobs_job_type_id", n
        assert "job_type" in n["Index Cond"], n


def test_dashboard_history_reads_rollups_and_recent_rows_only(big):
    from prosaas_core.tokens import create_admin_token

    rt = big["rt"]
    with rt.session() as s:
        admin = create_admin_token(s, "ops-scale")[0]
    client = create_app(runtime=rt).test_client()
    page = client.get("/dashboard/login").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    assert client.post("/dashboard/login", data={"csrf": csrf, "token": admin}).status_code == 303
    with Capture(rt) as cap:
        every = client.get("/dashboard/api/history?days=90").get_json()
        small = client.get(f"/dashboard/api/history?business={big['small']}").get_json()
    assert sum(sum(n) for n in every["series"].values()) >= ROWS * 0.95  # ~89 of the 90 days
    assert sum(d["succeeded"] for d in small["per_day"]) == 15
    assert_bounded(explain(big, cap.statements))  # only the rows past the watermark


def _finished(body: str) -> dict[tuple[str, str], float]:
    pat = re.compile(r'prosaas_jobs_finished_total\{job_type="([^"]+)",status="([^"]+)"\} (\S+)')
    return {(t, s): float(v) for t, s, v in pat.findall(body)}


def _counts(cur, sql: str, params: tuple = ()) -> dict:
    cur.execute(sql, params)
    return {tuple(r[:-1]): r[-1] for r in cur.fetchall()}


# failed under 29 days old at a fixed instant (the test's start), so rows crossing the boundary
# while it prunes don't change the count
YOUNG_FAILED = (
    "SELECT job_type, count(*) FROM background_jobs WHERE status = 'failed'"
    " AND finished_at > %s - interval '29 days' GROUP BY 1"
)
BY_DAY = (
    "SELECT date(timezone('UTC', finished_at)), business_id, job_type, status, count(*)"
    " FROM background_jobs WHERE status IN ('succeeded', 'failed', 'cancelled')"
    " GROUP BY 1, 2, 3, 4"
)


def test_pruning_keeps_history_spares_active_rows_and_never_blocks_a_writer(big):
    """Last in the module: deletes most of the rows."""
    rt, raw = big["rt"], big["raw"]
    client = create_app(runtime=rt).test_client()
    metrics_before = _finished(client.get("/metrics").get_data(as_text=True))
    with raw.cursor() as cur:
        before = _counts(cur, BY_DAY)
        active = _counts(cur, "SELECT id, status FROM background_jobs WHERE status IN"
                              " ('queued', 'running')")  # fmt: skip
        cur.execute("SELECT now()")
        (t0,) = cur.fetchone()
        young_failed = _counts(cur, YOUNG_FAILED, (t0,))
    settings = Settings.from_env(
        {
            **rt.settings.env,
            "PROSAAS_RETENTION_SUCCEEDED_DAYS": "1",
            "PROSAAS_RETENTION_FAILED_DAYS": "30",
            "PROSAAS_RETENTION_CANCELLED_DAYS": "1",
            "PROSAAS_RETENTION_OVERRIDES": "broadcast.succeeded=60,delete_leads.cancelled=never",
        }
    )
    prt = Runtime(settings, pm=get_plugin_manager(load_entrypoints=True))

    # a writer inserting jobs all along: no insert may wait 50 ms for a lock
    stop, waits, errors = threading.Event(), [], []

    def writer() -> None:
        conn = psycopg2.connect(big["url"])
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SET lock_timeout = '50ms'")
            while not stop.is_set():
                t = time.monotonic()
                try:
                    cur.execute(
                        "INSERT INTO background_jobs (business_id, job_type, payload)"
                        " VALUES (%s, 'acme_echo', '{}')",
                        (big["small"],),
                    )
                except psycopg2.Error as exc:
                    errors.append(str(exc))
                waits.append(time.monotonic() - t)
                time.sleep(0.005)
        conn.close()

    th = threading.Thread(target=writer)
    th.start()
    try:
        out = prune(prt, batch=1000)
    finally:
        stop.set()
        th.join()
        prt.close()
    assert not errors, errors[:3]  # no insert waited 50 ms on a lock (lock_timeout)
    assert len(waits) > 10
    assert out["total"] > 800_000, out
    assert out["total"] <= out["batches"] * 1000  # bounded batches

    with raw.cursor() as cur:
        # per type and status: the oldest row left, in days
        oldest = _counts(cur, "SELECT job_type, status, extract(epoch FROM now()"
                              " - min(finished_at)) / 86400 FROM background_jobs WHERE status"
                              " IN ('succeeded', 'failed', 'cancelled') GROUP BY 1, 2")  # fmt: skip
        last = max(i for (i,) in active)  # the writer's rows come after
        after_active = _counts(cur, "SELECT id, status FROM background_jobs WHERE status IN"
                                    f" ('queued', 'running') AND id <= {last}")  # fmt: skip
        after_young_failed = _counts(cur, YOUNG_FAILED, (t0,))
        cur.execute("SELECT day, business_id, job_type, status, jobs FROM prosaas_job_rollups")
        rollups = {tuple(r[:-1]): r[-1] for r in cur.fetchall()}
    assert after_active == active  # every active row, even one with an old finished_at
    # retention per status and per type (a minute of slack: the test's clock moved on)
    keep = {"succeeded": 1, "failed": 30, "cancelled": 1}
    special = {("broadcast", "succeeded"): 60, ("delete_leads", "cancelled"): None}
    for (job_type, status), age in oldest.items():
        days = special.get((job_type, status), keep[status])
        if days is not None:
            assert age < days + 1 / 1440, (job_type, status, age)
    assert oldest[("delete_leads", "cancelled")] > 80  # kept for ever
    assert oldest[("broadcast", "succeeded")] > 59  # kept 60 days, not 1
    assert after_young_failed == young_failed  # failed jobs under 30 days: all still there
    # the history is kept: rollups equal the counts before pruning, and so do the metrics
    assert rollups == before
    assert _finished(client.get("/metrics").get_data(as_text=True)) == metrics_before
