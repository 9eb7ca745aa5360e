"""The enqueue fast path: the foreign key stands in for the business check, driver errors on the
bare-cursor path surface as SQLAlchemy's, and pooled connections recover from a server that
dropped them (the idle ping, and the lost-once path for a connection in busy use)."""

from __future__ import annotations

import time

import pytest
import redis
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.exc import OperationalError

from prosaas_core import migrate
from prosaas_core.api.app import create_app
from prosaas_core.db import autocommit, autocommit_cursor, make_engine
from prosaas_core.errors import NotFoundError
from prosaas_core.jobs.enqueue import enqueue
from prosaas_core.jobs.transport import rq_job_id
from prosaas_core.models import BackgroundJob
from prosaas_core.plugins import get_plugin_manager
from prosaas_core.runtime import Runtime
from prosaas_core.settings import Settings
from prosaas_core.testing import bearer, business_with_token
from prosaas_core.tokens import lookup_token, revoke_token


def _jobs(rt: Runtime) -> int:
    with rt.session() as s:
        return s.scalar(select(func.count()).select_from(BackgroundJob))


def _backend_pid(engine) -> int:
    with autocommit(engine) as conn:
        return conn.execute(text("SELECT pg_backend_pid()")).scalar_one()


def _terminate(url: str, pid: int) -> None:
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
    admin.dispose()


def test_missing_business_is_not_found_and_nothing_is_written(runtime, redis_url):
    with pytest.raises(NotFoundError, match="business 987654 not found"):
        enqueue(runtime, "acme_echo", 987654, {"message": "x"})
    assert _jobs(runtime) == 0
    assert redis.Redis.from_url(redis_url).keys("rq:job:*") == []


def test_enqueue_commits_then_pushes_the_rq_job_by_its_row_id(runtime, business, redis_url):
    res = enqueue(runtime, "acme_echo", business, {"message": "hi"})
    assert (res.created, res.pushed, res.status) == (True, True, "queued")
    with runtime.session() as s:
        row = s.get(BackgroundJob, res.id)
        assert (row.payload, row.attempts, row.fence, row.cancel_requested) == (
            {"message": "hi"},
            0,
            0,
            False,
        )
    r = redis.Redis.from_url(redis_url)
    assert r.lrange("rq:queue:default", 0, -1) == [rq_job_id(res.id).encode()]
    again = enqueue(runtime, "acme_echo", business, {"message": "again"})
    assert r.lrange("rq:queue:default", 0, -1)[-1] == rq_job_id(again.id).encode()


def test_sqlite_path_checks_the_business_and_commits(sqlite_url, redis_url):
    rt = Runtime(
        Settings.from_env({"DATABASE_URL": sqlite_url, "REDIS_URL": redis_url}),
        pm=get_plugin_manager(load_entrypoints=True),
    )
    try:
        migrate.upgrade(rt)
        business_id, token = business_with_token(rt, "lite")
        assert lookup_token(rt.engine, token) == business_id
        res = enqueue(rt, "acme_echo", business_id, {"message": "x"})
        assert res.created and _jobs(rt) == 1
        with pytest.raises(NotFoundError):
            enqueue(rt, "acme_echo", business_id + 100, {"message": "x"})
        assert _jobs(rt) == 1
        client = create_app(runtime=rt).test_client()  # the API's token-checking INSERT
        body = {"job_type": "acme_echo", "payload": {"message": "x"}}
        assert client.post("/api/jobs", json=body, headers=bearer(token)).status_code == 202
        assert _jobs(rt) == 2
        with rt.session() as s:
            assert revoke_token(s, token) == 1
        assert lookup_token(rt.engine, token) is None
        assert client.post("/api/jobs", json=body, headers=bearer(token)).status_code == 401
        assert _jobs(rt) == 2
    finally:
        rt.close()


def test_idle_connection_dropped_by_the_server_is_replaced_on_checkout(pg_url):
    engine = make_engine(pg_url, ping_idle_seconds=0.05)
    try:
        pid = _backend_pid(engine)
        _terminate(pg_url, pid)
        time.sleep(0.1)  # now idle past the threshold: pinged, found dead, replaced
        with autocommit_cursor(engine) as cur:
            cur.execute("SELECT pg_backend_pid()")
            assert cur.fetchone()[0] != pid
    finally:
        engine.dispose()


def test_busy_connection_lost_fails_once_as_sqlalchemy_error_then_recovers(pg_url):
    engine = make_engine(pg_url, ping_idle_seconds=3600)  # never pinged in this test
    try:
        pid = _backend_pid(engine)
        _terminate(pg_url, pid)
        with pytest.raises(OperationalError) as info:
            with autocommit_cursor(engine) as cur:
                cur.execute("SELECT 1")
        assert info.value.connection_invalidated
        assert _backend_pid(engine) != pid  # the dead connection did not go back to the pool
    finally:
        engine.dispose()


def _last_statement(url: str, pid: int) -> str:
    """What the server last ran for backend `pid` (its own record, not the driver's)."""
    admin = create_engine(url)
    try:
        with admin.connect() as conn:
            return conn.execute(
                text("SELECT query FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
            ).scalar_one()
    finally:
        admin.dispose()


def test_a_read_at_another_isolation_level_costs_the_hot_paths_no_extra_statement(pg_url):
    """The history's snapshot reads run at REPEATABLE READ; the connection goes back to the
    pool at the default level without psycopg2 keeping it as a setting, so later autocommit
    checkouts (enqueue, the job's bulk batches) send only their own statements."""
    engine = make_engine(pg_url, pool_size=1, max_overflow=0)  # one connection, reused
    try:
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            assert conn.execute(text("SHOW transaction_isolation")).scalar() == "repeatable read"
        pid = _backend_pid(engine)
        assert _last_statement(pg_url, pid) == "SELECT pg_backend_pid()"
        with autocommit_cursor(engine) as cur:
            cur.execute("SELECT 'the bare cursor', pg_backend_pid()")
            assert cur.fetchone()[1] == pid
        assert _last_statement(pg_url, pid) == "SELECT 'the bare cursor', pg_backend_pid()"
        with engine.begin() as conn:  # and a transaction still runs at the default level
            assert conn.execute(text("SHOW transaction_isolation")).scalar() == "read committed"
    finally:
        engine.dispose()


def test_api_answers_503_json_once_then_serves_when_its_connection_was_lost(runtime):
    business_id, token = business_with_token(runtime, "A")
    client = create_app(runtime=runtime).test_client()
    body = {"job_type": "acme_echo", "payload": {"message": "x"}}
    assert client.post("/api/jobs", json=body, headers=bearer(token)).status_code == 202
    # kill the app's pooled connections, recently used (so not pinged unless the test is slow)
    admin = create_engine(runtime.settings.database_url)
    with admin.begin() as conn:
        conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    admin.dispose()
    answers = [client.post("/api/jobs", json=body, headers=bearer(token)) for _ in range(3)]
    for resp in answers:
        assert resp.status_code in (202, 503), resp.get_data(as_text=True)
        if resp.status_code == 503:
            assert resp.get_json()["error"] == "Database unavailable"
    assert answers[-1].status_code == 202


def _commands_on_db(r: redis.Redis, fn) -> list[str]:
    """The commands clients send to `r`'s database while `fn` runs (MONITOR, read up to a
    marker sent after it): other databases' traffic, a new connection's handshake and the
    commands a script runs inside Redis are left out."""
    db = r.connection_pool.connection_kwargs.get("db", 0)
    marker = f"end-{time.monotonic_ns()}"
    seen: list[str] = []
    with r.monitor() as m:
        fn()
        r.echo(marker)
        while True:
            cmd = m.next_command()
            if str(cmd.get("db")) != str(db) or cmd.get("client_type") == "lua":
                continue
            if marker in cmd["command"]:
                return seen
            name = cmd["command"].split()[0].upper()
            if name not in ("SELECT", "CLIENT", "HELLO"):
                seen.append(name)


def test_push_is_one_redis_command_writing_the_job_hash_rq_writes(runtime, business, redis_url):
    """The push after the commit is one command, and what it writes is what RQ's own enqueue
    writes (timestamps aside): the queue in rq:queues (``rq info``), the id on the queue's
    list and the job hash field for field, so RQ reads it as its own job."""
    from rq import Queue
    from rq.job import Job

    from prosaas_core.jobs.transport import DISPATCH

    r = redis.Redis.from_url(redis_url)
    enqueue(runtime, "acme_echo", business, {"message": "warm"})  # the script is loaded
    jobs: list = []
    commands = _commands_on_db(
        r, lambda: jobs.append(enqueue(runtime, "acme_echo", business, {"message": "x"}))
    )
    assert commands == ["EVALSHA"]
    rq_id = rq_job_id(jobs[0].id)
    ours = r.hgetall(f"rq:job:{rq_id}")
    assert r.lrange("rq:queue:default", -1, -1) == [rq_id.encode()]
    assert [q.name for q in Queue.all(connection=r)] == ["default"]
    job = Job.fetch(rq_id, connection=r)
    assert (job.func_name, job.args, job.origin, job.get_status()) == (
        DISPATCH,
        (jobs[0].id,),
        "default",
        "queued",
    )
    r.flushdb()
    Queue("default", connection=r).enqueue_call(
        DISPATCH,
        args=(jobs[0].id,),
        job_id=rq_id,
        timeout=-1,
        result_ttl=300,
        failure_ttl=86400,
        description=f"{DISPATCH}({jobs[0].id})",
    )
    theirs = r.hgetall(f"rq:job:{rq_id}")
    stamps = {b"created_at", b"enqueued_at"}
    assert {k: v for k, v in ours.items() if k not in stamps} == {
        k: v for k, v in theirs.items() if k not in stamps
    }
    assert set(ours) == set(theirs)


def test_an_engine_wide_isolation_level_is_kept_across_checkouts(pg_url):
    engine = make_engine(pg_url, pool_size=1, max_overflow=0, isolation_level="SERIALIZABLE")
    try:
        for _ in range(2):
            with autocommit_cursor(engine) as cur:
                cur.execute("SELECT 1")
            with engine.begin() as conn:
                assert conn.execute(text("SHOW transaction_isolation")).scalar() == "serializable"
    finally:
        engine.dispose()
