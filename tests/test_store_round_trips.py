"""The one store keeps the hot paths' round trips: counted at the driver (psycopg2), where a
bare cursor's statements, implicit BEGINs, COMMITs and ROLLBACKs all show, whatever layer
above sent them."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator

import psycopg2.extensions as ext
import pytest

from prosaas_core import Runtime, Settings
from prosaas_core.db import make_engine
from prosaas_core.jobs import store
from prosaas_core.jobs.context import PROGRESS_INTERVAL, JobContext
from prosaas_core.jobs.dispatch import Dispatcher
from prosaas_core.jobs.enqueue import enqueue
from prosaas_core.plugins import get_plugin_manager
from prosaas_core.tokens import create_token, lookup_token

LOG: list[str] = []


class _Cursor(ext.cursor):
    def execute(self, query, vars=None):
        if not self.connection.autocommit and self.connection.status == ext.STATUS_READY:
            LOG.append("BEGIN")  # psycopg2 sends one first
        LOG.append(" ".join(str(query).split()[:2]))
        return super().execute(query, vars)


class _Connection(ext.connection):
    def cursor(self, *args, **kwargs):
        kwargs.setdefault("cursor_factory", _Cursor)
        return super().cursor(*args, **kwargs)

    def commit(self):
        if self.status != ext.STATUS_READY:
            LOG.append("COMMIT")
        return super().commit()

    def rollback(self):
        if self.status != ext.STATUS_READY:
            LOG.append("ROLLBACK")
        return super().rollback()


@pytest.fixture
def counted(runtime: Runtime, env: dict[str, str]) -> Iterator[Runtime]:
    """A second runtime on the same (migrated) database whose every connection is counted."""
    rt = Runtime(Settings.from_env(env), pm=get_plugin_manager(load_entrypoints=True))
    engine = make_engine(env["DATABASE_URL"], connect_args={"connection_factory": _Connection})
    rt.__dict__["engine"] = engine  # the runtime builds it lazily; this one counts
    with engine.connect():  # the dialect's first-connect queries are not the hot path's
        pass
    yield rt
    rt.close()


def _during(fn) -> list[str]:
    LOG.clear()
    fn()
    # a prepared statement's name ends in a digest of its text
    return [re.sub(r"^((?:PREPARE|EXECUTE) prosaas_\w+)_[0-9a-f]{8}$", r"\1", x) for x in LOG]


def test_a_trivial_job_costs_its_claim_and_its_outcome(counted, business):
    disp = Dispatcher(counted, "counted-worker", threading.Event())
    try:
        for message in ("one", "two"):  # the second on the kept connection
            job = enqueue(counted, "acme_echo", business, {"message": message})
            assert _during(lambda j=job: disp.run(j.id)) == [
                "UPDATE background_jobs",
                "UPDATE background_jobs",
            ]
    finally:
        disp.stop()


def test_a_worker_job_is_one_prepared_statement_writing_the_last_outcome(counted, business):
    """`prosaas worker` (prepare=True, defer=True): each job's claim carries the previous
    job's outcome, one EXECUTE of a statement prepared once on the kept connection; the last
    outcome is written by flush."""
    from prosaas_core.jobs import control

    disp = Dispatcher(counted, "counted-worker", threading.Event(), prepare=True)
    a, b, c = (enqueue(counted, "acme_echo", business, {"message": m}).id for m in "abc")
    try:
        assert _during(lambda: disp.run(a, defer=True))[-2:] == [
            "PREPARE prosaas_claim_job",
            "EXECUTE prosaas_claim_job",
        ]
        assert _during(lambda: disp.run(b, defer=True)) == [
            "PREPARE prosaas_finish_and_claim_job",
            "EXECUTE prosaas_finish_and_claim_job",
        ]
        assert [control.get_job(counted, i)["status"] for i in (a, b)] == ["succeeded", "running"]
        assert _during(lambda: disp.run(c, defer=True)) == ["EXECUTE prosaas_finish_and_claim_job"]
        assert _during(disp.flush) == ["PREPARE prosaas_finish_job", "EXECUTE prosaas_finish_job"]
        assert _during(disp.flush) == []  # nothing held back any more
        for i, m in ((a, "a"), (b, "b"), (c, "c")):
            job = control.get_job(counted, i)
            assert (job["status"], job["result"]) == ("succeeded", {"echo": m, "attempt": 1})
    finally:
        disp.stop()


def test_enqueue_and_token_lookup_are_one_statement_each(counted, business):
    enqueue(counted, "acme_echo", business, {"message": "x"})  # loads the flow limits (cached)
    assert _during(lambda: enqueue(counted, "acme_echo", business, {"message": "x"})) == [
        "INSERT INTO"
    ]
    with counted.session() as s:
        token = create_token(s, business)
    found: list[int | None] = []
    assert _during(lambda: found.append(lookup_token(counted.engine, token))) == [
        "SELECT business_id,"
    ]
    assert found == [business]


def test_api_enqueue_is_one_statement_with_its_token_check(counted, business):
    """POST /api/jobs: the token's lookup is part of the job's INSERT, one round trip for the
    whole request; the job is the token's business's."""
    from prosaas_core.api.app import create_app
    from prosaas_core.jobs import control

    with counted.session() as s:
        token = create_token(s, business)
    client = create_app(runtime=counted).test_client()
    body = {"job_type": "acme_echo", "payload": {"message": "x"}}
    headers = {"Authorization": f"Bearer {token}"}
    assert client.post("/api/jobs", json=body, headers=headers).status_code == 202  # warm
    answers = []
    assert _during(
        lambda: answers.append(client.post("/api/jobs", json=body, headers=headers))
    ) == ["INSERT INTO"]
    assert answers[0].status_code == 202
    job = control.get_job(counted, answers[0].get_json()["id"])
    assert job is not None and job["business_id"] == business


def test_job_writes_through_the_worker_connection_are_throttled(counted, business):
    disp = Dispatcher(counted, "counted-worker", threading.Event())
    try:
        job = enqueue(counted, "acme_echo", business, {"message": "x"})
        with disp.connect() as db:
            claim = store.claim(db, job.id, "counted-worker")
        assert claim is not None
        ctx = JobContext(
            counted, claim, {"message": "x"}, connect=disp.connect, shutdown=threading.Event()
        )
        LOG.clear()
        start = time.monotonic()
        for i in range(3000):
            ctx.progress(i, 3000)
        elapsed = time.monotonic() - start
        writes = list(LOG)
        assert set(writes) <= {"UPDATE background_jobs"}  # autocommit: no BEGIN, no COMMIT
        assert 1 <= len(writes) <= 2 + elapsed / PROGRESS_INTERVAL
        with ctx.db() as db:  # the handler's own named queries run on the same connection
            assert store.touch(db, job.id, claim.fence, processed=1) is False
    finally:
        disp.stop()


def test_a_work_horse_neither_probes_for_a_pooler_nor_prepares(counted, business):
    """A forking worker's work horse keeps its connection for one job: it runs the two plain
    statements, with no pooler probe and no PREPARE (either would cost every job)."""
    import json
    import os

    disp = Dispatcher(counted, "counted-worker", threading.Event(), prepare=True)
    job = enqueue(counted, "acme_echo", business, {"message": "horse"})
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the work horse
        try:
            LOG.clear()
            disp.run(job.id)  # notices the fork: fresh connections
            os.write(write, json.dumps(LOG).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        statements = json.loads(pipe.read() or "null")
    os.waitpid(pid, 0)
    assert statements == ["UPDATE background_jobs", "UPDATE background_jobs"], statements


def test_a_plugin_query_named_like_a_core_one_is_not_the_core_statement(counted, business):
    """The kept connection prepares the core's query objects, not whatever shares their name:
    a plugin's own `claim_job` handed the same connection runs as itself."""
    from prosaas_core.store import Query

    disp = Dispatcher(counted, "counted-worker", threading.Event(), prepare=True)
    try:
        disp.run(enqueue(counted, "acme_echo", business, {"message": "x"}).id, defer=True)
        mine = Query.of("claim_job", "SELECT %(n)s + 1")
        with disp.connect() as db:
            assert _during(lambda: db.scalar(mine, {"n": 41})) == ["SELECT %(n)s"]
            assert db.scalar(mine, {"n": 41}) == 42
    finally:
        disp.stop()
    # its statements were dropped with it: the next dispatcher on the pool prepares afresh
    again = Dispatcher(counted, "counted-worker-2", threading.Event(), prepare=True)
    try:
        job = enqueue(counted, "acme_echo", business, {"message": "y"})
        assert "PREPARE prosaas_claim_job" in _during(lambda: again.run(job.id, defer=True))
    finally:
        again.stop()
