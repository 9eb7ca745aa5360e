"""A database crash under a bulk lead job whose batches commit without waiting for the disk
(``checkpoint_write(durable=False)``): the crash loses the last batches together with their
checkpoints, the attempt that goes on finds out at its next checkpoint or when it settles
(`CheckpointLost`), and the next attempt redoes exactly what was lost.

The WAL is held in shared memory (`PgServer.hold_wal`) and the database set to commit
synchronously (the suite's server does not), so what a crash loses is certain, not a race."""

from __future__ import annotations

import threading

import pytest

from prosaas_core.jobs import store
from prosaas_core.jobs.context import CheckpointLost, JobContext
from prosaas_core.jobs.enqueue import enqueue
from prosaas_core.leads import LeadSelection, deleting, run_selection
from prosaas_core.testing import wait_until

LEADS, BATCH = 60, 20


class _Attempt:
    """One attempt of the job, run in this process as the worker runs it (claim, context)."""

    def __init__(self, fault, job_id: int, crash_before_batch: int | None = None) -> None:
        self.fault = fault
        with fault.rt.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            claim = store.claim(conn, job_id, "test-worker")
        assert claim is not None
        self.claim = claim
        crash_at = crash_before_batch

        def connect():
            return fault.rt.engine.connect().execution_options(isolation_level="AUTOCOMMIT")

        class Ctx(JobContext):
            batches = 0

            def should_stop(self) -> bool:  # asked before each batch
                # (not the real one: its cancel poll, a synchronous commit once a second,
                # would flush the held WAL on a slow machine)
                self.batches += 1
                if self.batches == crash_at:
                    _crash(fault)
                return False

        self.ctx = Ctx(fault.rt, claim, {"all": True}, connect=connect, shutdown=threading.Event())

    def run(self) -> dict:
        return run_selection(
            self.ctx, LeadSelection(all=True), deleting(), counted_as="deleted", size=BATCH
        )

    def give_back(self) -> None:
        """What the worker does with a CheckpointLost: queued again, the attempt refunded."""
        with self.fault.rt.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            assert store.requeue(conn, self.claim.id, self.claim.fence, refund_attempt=True)


def _crash(fault) -> None:
    fault.pg.crash()
    fault.pg.start()
    # the pool reconnects at once (as its idle ping does after an outage): the attempt goes on
    fault.rt.engine.dispose()


def _leads(fault) -> int:
    return fault.sql("SELECT count(*) FROM leads WHERE business_id = :b", b=fault.business)[0][0]


@pytest.fixture
def job(fault):
    fault.pg.sql(f'ALTER DATABASE "{fault.db}" SET synchronous_commit = on')
    fault.rt.engine.dispose()  # sessions opened before the setting would keep the server's
    fault.sql(
        "INSERT INTO leads (business_id, name) SELECT :b, 'Lead ' || g "
        "FROM generate_series(1, :n) g",
        b=fault.business,
        n=LEADS,
    )
    yield enqueue(fault.rt, "delete_leads", fault.business, {"all": True}).id
    fault.pg.release_wal()  # a failed test must not leave the suite's server holding it


def test_a_crash_between_batches_stops_the_attempt_and_the_next_redoes_them(fault, job):
    fault.pg.hold_wal()
    first = _Attempt(fault, job, crash_before_batch=3)
    with pytest.raises(CheckpointLost):
        first.run()  # batches 1 and 2 were lost with their checkpoints; batch 3 not written
    assert _leads(fault) == LEADS
    assert (fault.job(job)["state"] or {}).get("deleted") is None
    first.give_back()

    second = _Attempt(fault, job)
    counts = second.run()
    assert counts["deleted"] == LEADS and counts["not_found"] == 0, counts
    assert _leads(fault) == 0
    assert second.claim.attempt == 1  # the crash cost no attempt


def test_a_crash_after_the_last_batch_is_found_before_the_counts_are_returned(fault, job):
    fault.pg.hold_wal()
    first = _Attempt(fault, job, crash_before_batch=LEADS // BATCH + 1)  # after the last one
    with pytest.raises(CheckpointLost):
        first.run()  # run_selection settles before it returns: the three batches are gone
    assert _leads(fault) == LEADS
    first.give_back()

    second = _Attempt(fault, job)
    counts = second.run()
    _crash(fault)  # settled: on disk, whatever happens to the server now
    assert _leads(fault) == 0
    assert counts["deleted"] == LEADS and counts["batches"] == LEADS // BATCH, counts


def test_the_worker_records_no_outcome_before_its_batches_are_on_disk(fault, job):
    """Through a real worker, a plugin's own batches (``acme_untick``: checkpoint_write with
    durable=False): a crash after its last batch, before the handler returns, loses them; the
    worker settles, finds the loss, runs the job again without counting the attempt, and
    records it succeeded with every row deleted once."""
    fault.sql(
        "INSERT INTO acme_ticks (business_id, job_id, item, attempt) "
        "SELECT :b, :j, g, 1 FROM generate_series(0, :n - 1) g",
        b=fault.business,
        j=job,
        n=LEADS,
    )

    def ticks() -> int:
        return fault.sql("SELECT count(*) FROM acme_ticks WHERE job_id = :j", j=job)[0][0]

    # every commit of this database skips the disk (the suite server's setting), so with the
    # WAL held nothing after the hold survives the crash: not the batches, not the heartbeats
    fault.pg.sql(f'ALTER DATABASE "{fault.db}" SET synchronous_commit = off')
    # a lease long enough for the crash and restart (the attempt must go on, not be rescued)
    fault.start_worker("--queues", "acme", extra_env={"PROSAAS_LEASE_TTL": "30"})
    payload = {"of": job, "n": LEADS, "batch": BATCH, "before": 2, "after": 5}
    untick = fault.enqueue("acme_untick", payload)
    wait_until(lambda: fault.job(untick)["status"] == "running", 30, "claimed")
    fault.pg.sql("CHECKPOINT")  # the rows and the claim on disk (the handler waits 2 s)
    fault.pg.hold_wal()
    wait_until(lambda: (fault.job(untick)["state"] or {}).get("deleted") == LEADS, 30, "batches")
    assert ticks() == 0
    _crash(fault)
    assert ticks() == LEADS  # the batches were lost; the handler has not returned yet
    wait_until(lambda: fault.job(untick)["status"] == "succeeded", 60, "done")
    got = fault.job(untick)
    assert got["attempts"] == 1 and got["result"] == {"deleted": LEADS}, got
    assert ticks() == 0
    assert "a checkpoint lost in a database crash: attempt not counted" in fault.workers[0].log()
