"""JobContext writes: fenced, and progress throttled to a few writes a second."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import text

from prosaas_core.jobs import store
from prosaas_core.jobs.context import JobContext, JobLost
from prosaas_core.jobs.enqueue import enqueue
from prosaas_core.jobs.sweeper import sweep


def _context(runtime, business) -> JobContext:
    job = enqueue(runtime, "acme_echo", business, {"message": "x"})
    with runtime.engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        claim = store.claim(conn, job.id, "test-worker")
    assert claim is not None and claim.attempt == 1 and claim.fence == 1

    def connect():
        return runtime.engine.connect().execution_options(isolation_level="AUTOCOMMIT")

    return JobContext(runtime, claim, {"message": "x"}, connect=connect, shutdown=threading.Event())


def _count_row_updates(runtime) -> None:
    """A trigger counting UPDATEs of background_jobs rows, whatever layer sent them (the store
    writes on bare driver cursors, which SQLAlchemy's events don't see)."""
    with runtime.engine.begin() as conn:
        conn.execute(text("CREATE TABLE job_updates (n integer NOT NULL)"))
        conn.execute(text("INSERT INTO job_updates VALUES (0)"))
        conn.execute(
            text(
                "CREATE FUNCTION count_job_update() RETURNS trigger AS $$ BEGIN "
                "UPDATE job_updates SET n = n + 1; RETURN NEW; END $$ LANGUAGE plpgsql"
            )
        )
        conn.execute(
            text(
                "CREATE TRIGGER count_job_update AFTER UPDATE ON background_jobs "
                "FOR EACH ROW EXECUTE FUNCTION count_job_update()"
            )
        )


def _row_updates(runtime) -> int:
    with runtime.engine.connect() as conn:
        return conn.execute(text("SELECT n FROM job_updates")).scalar_one()


def test_progress_is_throttled(runtime, business):
    ctx = _context(runtime, business)
    _count_row_updates(runtime)

    start = time.monotonic()
    for i in range(5000):
        ctx.progress(i, 5000)
    elapsed = time.monotonic() - start
    updates = _row_updates(runtime)
    assert 1 <= updates <= 1 + elapsed / 0.25 + 1
    ctx.checkpoint({"next": 4999})  # a checkpoint is written at once, with the pending progress
    with runtime.session() as s:
        from prosaas_core.models import BackgroundJob

        row = s.get(BackgroundJob, ctx.job_id)
        assert (row.processed, row.total, row.state) == (4999, 5000, {"next": 4999})


def test_writes_of_a_rescued_attempt_are_refused(runtime, business):
    ctx = _context(runtime, business)
    with runtime.engine.begin() as conn:
        from sqlalchemy import text

        conn.execute(text("UPDATE background_jobs SET heartbeat_at = now() - interval '1 hour'"))
    assert sweep(runtime).rescued == [ctx.job_id]
    with pytest.raises(JobLost):
        ctx.checkpoint({"next": 1})
    assert ctx.should_stop()
    with runtime.engine.connect() as conn:
        assert not store.finish(conn, ctx.job_id, ctx.fence, "succeeded", result={"late": 1})


def test_checkpoint_in_a_session_commits_or_rolls_back_with_the_work(runtime, business):
    from sqlalchemy import text

    from prosaas_core.models import BackgroundJob

    ctx = _context(runtime, business)
    insert = text(
        "INSERT INTO acme_ticks (business_id, job_id, item, attempt) VALUES (:b, :j, :i, 1)"
    )
    with pytest.raises(RuntimeError):
        with ctx.session() as s:
            s.execute(insert, {"b": business, "j": ctx.job_id, "i": 0})
            ctx.checkpoint({"next": 1}, session=s)
            raise RuntimeError("killed before commit")
    with ctx.session() as s:
        s.execute(insert, {"b": business, "j": ctx.job_id, "i": 1})
        ctx.checkpoint({"next": 2}, session=s)
    with runtime.session() as s:
        items = s.execute(text("SELECT item FROM acme_ticks ORDER BY item")).scalars().all()
        assert (items, s.get(BackgroundJob, ctx.job_id).state) == ([1], {"next": 2})


def test_checkpoint_in_a_session_of_a_rescued_attempt_writes_nothing(runtime, business):
    from sqlalchemy import text

    ctx = _context(runtime, business)
    with runtime.engine.begin() as conn:
        conn.execute(text("UPDATE background_jobs SET heartbeat_at = now() - interval '1 hour'"))
    assert sweep(runtime).rescued == [ctx.job_id]
    with pytest.raises(JobLost):
        with ctx.session() as s:
            s.execute(
                text("INSERT INTO acme_ticks (business_id, job_id, item, attempt) VALUES (1,1,1,1)")
            )
            ctx.checkpoint({"next": 1}, session=s)
    with runtime.session() as s:
        assert s.execute(text("SELECT count(*) FROM acme_ticks")).scalar() == 0


def test_ctx_log_carries_the_job_fields(runtime, business, caplog):
    ctx = _context(runtime, business)
    with caplog.at_level("INFO"):
        ctx.log.info("Deleted %d leads successfully", 50)
    record = caplog.records[-1]
    assert (record.job_id, record.business_id, record.job_type) == (
        ctx.job_id,
        business,
        "acme_echo",
    )
    assert record.getMessage() == (
        f"Deleted 50 leads successfully [job_id={ctx.job_id} business_id={business} "
        "job_type=acme_echo]"
    )


def test_writes_after_a_session_checkpoint_do_not_wait_on_the_open_transaction(runtime, business):
    from sqlalchemy import text

    from prosaas_core.jobs import context as context_module
    from prosaas_core.models import BackgroundJob

    ctx = _context(runtime, business)
    beat = threading.Thread(target=ctx.heartbeat)
    with ctx.session() as s:
        s.execute(
            text(
                "INSERT INTO acme_ticks (business_id, job_id, item, attempt) VALUES (:b, :j, 0, 1)"
            ),
            {"b": business, "j": ctx.job_id},
        )
        ctx.checkpoint({"next": 1}, session=s)
        beat.start()  # the heartbeat thread must not block on the row this transaction holds
        beat.join(timeout=5)
        assert not beat.is_alive()
        time.sleep(context_module.PROGRESS_INTERVAL + 0.05)
        ctx.progress(1, 10)  # written through the same transaction, not a second connection
        assert ctx.should_stop() is False
    with runtime.session() as s:
        row = s.get(BackgroundJob, ctx.job_id)
        assert (row.state, row.processed, row.total) == ({"next": 1}, 1, 10)


def _ticks(runtime, business, job_id, items) -> None:
    with runtime.engine.begin() as conn:
        for i in items:
            conn.execute(
                text(
                    "INSERT INTO acme_ticks (business_id, job_id, item, attempt) "
                    "VALUES (:b, :j, :i, 1)"
                ),
                {"b": business, "j": job_id, "i": i},
            )


def _tick_attempts(runtime) -> list[tuple[int, int]]:
    with runtime.engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(text("SELECT item, attempt FROM acme_ticks ORDER BY item"))
        ]


def test_checkpoint_write_is_one_statement_with_the_counts_and_progress(runtime, business):
    from sqlalchemy import column, table, update

    from prosaas_core.models import BackgroundJob

    ctx = _context(runtime, business)
    _ticks(runtime, business, ctx.job_id, range(5))
    _count_row_updates(runtime)
    ticks = table("acme_ticks", column("item"), column("attempt"))
    with ctx.connection() as conn:
        n = ctx.checkpoint_write(
            conn,
            update(ticks).where(ticks.c.item < 3).values(attempt=2),
            {"last": 2, "touched": 10, "missing": 7},
            add={"touched": 1, "missing": -1},
            done=3,
            total=5,
        )
    assert n == 3
    assert ctx.state == {"last": 2, "touched": 13, "missing": 4}
    assert _tick_attempts(runtime) == [(0, 2), (1, 2), (2, 2), (3, 1), (4, 1)]
    assert _row_updates(runtime) == 1  # write, checkpoint and progress: one row update
    with runtime.session() as s:
        row = s.get(BackgroundJob, ctx.job_id)
        assert (row.state, row.processed, row.total) == (ctx.state, 3, 5)


def test_checkpoint_write_of_a_rescued_attempt_changes_nothing(runtime, business):
    from sqlalchemy import column, table, update

    ctx = _context(runtime, business)
    _ticks(runtime, business, ctx.job_id, range(3))
    with runtime.engine.begin() as conn:
        conn.execute(text("UPDATE background_jobs SET heartbeat_at = now() - interval '1 hour'"))
    assert sweep(runtime).rescued == [ctx.job_id]
    ticks = table("acme_ticks", column("item"), column("attempt"))
    with pytest.raises(JobLost):
        with ctx.connection() as conn:
            ctx.checkpoint_write(conn, update(ticks).values(attempt=9), {"next": 1})
    assert _tick_attempts(runtime) == [(0, 1), (1, 1), (2, 1)]  # autocommit, yet not written
    with runtime.engine.connect() as conn:
        assert conn.execute(text("SELECT state FROM background_jobs")).scalar() is None
    assert ctx.should_stop()


def test_checkpoint_write_builds_a_reused_statement_once_and_stays_fenced(
    runtime, business, monkeypatch
):
    """A loop passing the same statement with new `params` each batch (as the lead jobs do):
    the fused statement is built once for the attempt, each call writes only its own batch
    with the counts adding up, and once the job is rescued the kept statement writes nothing."""
    from sqlalchemy import bindparam, column, table, update

    built = []
    real = store.fenced_statement
    monkeypatch.setattr(store, "fenced_statement", lambda *a, **k: built.append(1) or real(*a, **k))
    ctx = _context(runtime, business)
    _ticks(runtime, business, ctx.job_id, range(6))
    ticks = table("acme_ticks", column("item"), column("attempt"))
    batch = update(ticks).where(ticks.c.item > bindparam("lo"), ticks.c.item <= bindparam("hi"))
    batch = batch.values(attempt=2)
    state: dict = {"touched": 0}
    for lo, hi in ((-1, 1), (1, 3)):
        with ctx.connection() as conn:
            n = ctx.checkpoint_write(
                conn, batch, {**state, "last": hi}, add={"touched": 1}, params={"lo": lo, "hi": hi}
            )
        assert n == 2
        state = ctx.state
    assert built == [1]  # one fused statement for both batches
    assert ctx.state == {"touched": 4, "last": 3}
    assert _tick_attempts(runtime) == [(0, 2), (1, 2), (2, 2), (3, 2), (4, 1), (5, 1)]
    with runtime.engine.begin() as conn:
        conn.execute(text("UPDATE background_jobs SET heartbeat_at = now() - interval '1 hour'"))
    assert sweep(runtime).rescued == [ctx.job_id]
    with pytest.raises(JobLost):
        with ctx.connection() as conn:
            ctx.checkpoint_write(
                conn, batch, {**state, "last": 5}, add={"touched": 1}, params={"lo": 3, "hi": 5}
            )
    assert built == [1]
    assert _tick_attempts(runtime)[4:] == [(4, 1), (5, 1)]  # the stale attempt wrote nothing
    with runtime.engine.connect() as conn:
        saved = conn.execute(text("SELECT state FROM background_jobs")).scalar()
    assert saved == {"touched": 4, "last": 3}


def test_checkpoint_write_hears_a_cancel(runtime, business):
    from sqlalchemy import column, table, update

    ctx = _context(runtime, business)
    with runtime.engine.begin() as conn:
        conn.execute(text("UPDATE background_jobs SET cancel_requested = true"))
    ticks = table("acme_ticks", column("item"), column("attempt"))
    with ctx.connection() as conn:
        ctx.checkpoint_write(conn, update(ticks).values(attempt=2), {"next": 1})
    assert ctx.should_stop() and ctx.stopped_for == "cancel"
