"""The lead plugins end to end: jobs created through the HTTP API, run by real `prosaas worker`
processes against real PostgreSQL and Redis, with exact counts and strict tenant isolation."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from prosaas_core import create_app
from prosaas_core.tokens import create_token

PROSAAS = str(Path(sys.executable).with_name("prosaas"))
BATCH = {"PROSAAS_LEADS_BATCH_SIZE": "200"}


# -- helpers -------------------------------------------------------------------------------------


class Tenant:
    """A business with a bearer token, talking to the in-process app."""

    def __init__(self, runtime, client, name: str) -> None:
        with runtime.session() as s:
            self.id = s.execute(
                text("INSERT INTO businesses (name) VALUES (:n) RETURNING id"), {"n": name}
            ).scalar_one()
            self.headers = {"Authorization": f"Bearer {create_token(s, self.id)}"}
        self.client = client

    def post(self, path: str, body: dict | None = None, status: int = 202) -> dict:
        resp = self.client.post(path, json=body if body is not None else {}, headers=self.headers)
        assert resp.status_code == status, resp.get_json()
        return resp.get_json()

    def job(self, job_id: int) -> dict:
        resp = self.client.get(f"/api/jobs/{job_id}", headers=self.headers)
        assert resp.status_code == 200, resp.get_json()
        return resp.get_json()


def sql(runtime, stmt: str, **params):
    with runtime.session() as s:
        result = s.execute(text(stmt), params)
        return result.all() if result.returns_rows else []


def seed_interleaved(runtime, a: int, b: int, n: int, **cols) -> None:
    """`n` leads alternating between businesses a and b (a gets the odd ids), so every batch of
    either one's ids interleaves with the other's. `cols`: constant values (status, source)."""
    names = ", ".join(cols)
    values = ", ".join(f":{c}" for c in cols)
    sql(
        runtime,
        f"INSERT INTO leads (business_id{', ' + names if cols else ''}) "
        f"SELECT CASE WHEN g % 2 = 1 THEN :a ELSE :b END{', ' + values if cols else ''} "
        "FROM generate_series(1, :n) AS g",
        a=a,
        b=b,
        n=n,
        **cols,
    )


def lead_ids(runtime, business: int, **where) -> list[int]:
    cond = "".join(f" AND {k} = :{k}" for k in where)
    rows = sql(
        runtime,
        f"SELECT id FROM leads WHERE business_id = :b{cond} ORDER BY id",
        b=business,
        **where,
    )
    return [r[0] for r in rows]


def snapshot(runtime, business: int) -> list[tuple]:
    return sql(
        runtime,
        "SELECT id, status, owner, tags, notes, updated_at FROM leads WHERE business_id = :b "
        "ORDER BY id",
        b=business,
    )


def job_row(runtime, job_id: int) -> dict:
    [row] = sql(
        runtime,
        "SELECT status, attempts, processed, total, result, state FROM background_jobs "
        "WHERE id = :j",
        j=job_id,
    )
    return dict(row._mapping)


def run_worker(cli, **extra) -> str:
    proc = cli("worker", "--burst", check=True, extra_env={**BATCH, **extra}, timeout=180)
    return proc.stderr + proc.stdout


def start_worker(env: dict, **extra) -> subprocess.Popen:
    return subprocess.Popen(
        [PROSAAS, "worker"],
        env={**env, **BATCH, **extra},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: SIGKILL reaches any work horse too
    )


def wait_for(predicate, timeout: float = 60, every: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out waiting")


@pytest.fixture
def client(runtime):
    return create_app(runtime=runtime).test_client()


@pytest.fixture
def tenants(runtime, client) -> tuple[Tenant, Tenant]:
    return Tenant(runtime, client, "A"), Tenant(runtime, client, "B")


# -- each job type, end to end --------------------------------------------------------------------


def test_every_job_type_end_to_end_with_exact_counts_and_no_cross_tenant_effect(
    runtime, cli, tenants
):
    a, b = tenants
    seed_interleaved(runtime, a.id, b.id, 1200, status="new", source="web")
    seed_interleaved(runtime, a.id, b.id, 800, status="open", source="ads")
    a_new, b_all = lead_ids(runtime, a.id, status="new"), lead_ids(runtime, b.id)
    # calls of A's leads keep their history when the leads go
    sql(
        runtime,
        "INSERT INTO calls (business_id, call_sid, lead_id) "
        "SELECT :a, 'CA' || id, id FROM leads WHERE business_id = :a AND status = 'new'",
        a=a.id,
    )
    [(imp_a,), (imp_b,)] = sql(
        runtime,
        "INSERT INTO lead_imports (business_id) VALUES (:a), (:b) RETURNING id",
        a=a.id,
        b=b.id,
    )
    sql(
        runtime, "UPDATE leads SET import_id = :i WHERE id = ANY(:ids)", i=imp_a, ids=a_new[250:400]
    )
    sql(runtime, "UPDATE leads SET import_id = :i WHERE id = ANY(:ids)", i=imp_b, ids=b_all[:50])
    for t, n in ((a, 7), (b, 3)):
        for i in range(n):
            t.post("/api/receipts", {"amount_cents": 100 + i}, status=201)
    old = a_new[400:500]
    sql(runtime, "UPDATE leads SET created_at = '2020-06-01' WHERE id = ANY(:ids)", ids=old)
    sql(runtime, "UPDATE leads SET created_at = '2020-06-01' WHERE id = ANY(:ids)", ids=b_all)
    b_before = snapshot(runtime, b.id)

    # jobs of A over disjoint leads, run by one worker (one queue, in order)
    update = a.post(
        "/api/leads/bulk-update",
        {"filter": {"status": "open"}, "set": {"status": "won", "tags": ["vip"], "owner": "ann"}},
    )
    # by ids: A sends 250 of its own ids, 300 of B's and two that do not exist
    by_ids = a.post(
        "/api/leads/bulk-delete", {"lead_ids": a_new[:250] + b_all[:300] + [10**7, 10**7 + 1]}
    )
    # an update naming only B's leads updates nothing and reports them as not found
    b_ids_update = a.post(
        "/api/leads/bulk-update", {"lead_ids": b_all, "set": {"notes": "A was here"}}
    )
    by_date = a.post(
        "/api/leads/bulk-update",
        {
            "filter": {"created_before": "2021-01-01T00:00:00Z", "created_after": "2020-01-01"},
            "set": {"notes": "old lead"},
        },
    )
    by_import = a.post(f"/api/imports/{imp_a}/delete")
    assert a.post(f"/api/imports/{imp_b}/delete", status=404)["error"] == "Not found"
    receipts = a.post("/api/receipts/delete-all")
    out = run_worker(cli)

    res = a.job(update["id"])
    assert (res["status"], res["result"]["updated"]) == ("succeeded", 400)
    assert res["processed"] == res["total"] == 400
    res = a.job(b_ids_update["id"])
    assert (res["status"], res["result"]["updated"], res["result"]["not_found"]) == (
        "succeeded",
        0,
        1000,
    )
    res = a.job(by_date["id"])
    assert (res["status"], res["result"]["updated"]) == ("succeeded", 100)
    assert lead_ids(runtime, a.id, notes="old lead") == old
    res = a.job(by_ids["id"])
    assert res["status"] == "succeeded"
    assert (res["result"]["deleted"], res["result"]["not_found"]) == (250, 302)
    assert "Deleted 250 leads successfully (not found: 302" in out
    res = a.job(by_import["id"])
    assert (res["status"], res["result"]["deleted"]) == ("succeeded", 150)
    res = a.job(receipts["id"])
    assert (res["status"], res["result"]["deleted"]) == ("succeeded", 7)

    assert sql(
        runtime,
        "SELECT status, owner, tags, count(*) FROM leads WHERE business_id = :a "
        "GROUP BY 1, 2, 3 ORDER BY 1",
        a=a.id,
    ) == [("new", None, None, 200), ("won", "ann", ["vip"], 400)]
    assert lead_ids(runtime, a.id, status="new") == a_new[400:]
    assert sql(runtime, "SELECT count(*), count(lead_id) FROM calls") == [(600, 200)]
    assert sql(runtime, "SELECT business_id, count(*) FROM receipts GROUP BY 1") == [(b.id, 3)]
    assert snapshot(runtime, b.id) == b_before

    # then every lead of A
    job = a.post("/api/leads/bulk-delete", {"all": True})
    run_worker(cli)
    res = a.job(job["id"])
    assert (res["status"], res["result"]["deleted"], res["total"]) == ("succeeded", 600, 600)
    assert lead_ids(runtime, a.id) == []
    assert sql(runtime, "SELECT count(*), count(lead_id) FROM calls") == [(600, 0)]
    assert snapshot(runtime, b.id) == b_before  # not one of B's rows changed, whatever A sent


# -- crash, resume, cancel -----------------------------------------------------------------------


def test_sigkill_mid_delete_of_50000_leads_resumes_from_checkpoint_with_exact_counts(
    runtime, env, cli, tenants
):
    a, b = tenants
    seed_interleaved(runtime, a.id, b.id, 60_000, status="new")  # 30,000 of each, interleaved
    sql(
        runtime,
        "INSERT INTO leads (business_id, status) SELECT :a, 'new' FROM generate_series(1, 20000)",
        a=a.id,
    )
    b_before = snapshot(runtime, b.id)
    job = a.post("/api/leads/bulk-delete", {"all": True})

    worker = start_worker(env, PROSAAS_LEADS_BATCH_SIZE="500")
    try:
        state = wait_for(
            lambda: (job_row(runtime, job["id"])["state"] or {}).get("done", 0) >= 8000
        )
        os.killpg(worker.pid, signal.SIGKILL)
    finally:
        worker.wait(timeout=30)
    first = job_row(runtime, job["id"])
    assert first["status"] == "running"
    done_at_kill = first["state"]["done"]
    assert 8000 <= done_at_kill < 50_000, state
    # the checkpoint and the deletes were committed together: exactly that many are gone
    assert len(lead_ids(runtime, a.id)) == 50_000 - first["state"]["deleted"]

    time.sleep(5.5)  # PROSAAS_STALE_AFTER=5: the sweeper of the next worker rescues the job
    out = run_worker(cli, PROSAAS_LEADS_BATCH_SIZE="500")
    assert f"Resuming from checkpoint: {done_at_kill} of 50000 done" in out
    final = job_row(runtime, job["id"])
    assert final["status"] == "succeeded" and final["attempts"] == 2
    assert (final["result"]["deleted"], final["result"]["not_found"]) == (50_000, 0)
    assert final["processed"] == final["total"] == 50_000
    assert lead_ids(runtime, a.id) == []
    assert snapshot(runtime, b.id) == b_before


def test_cancel_mid_job_stops_between_batches_with_counts_so_far(runtime, env, cli, tenants):
    a, b = tenants
    seed_interleaved(runtime, a.id, b.id, 40_000, status="new")
    job = a.post("/api/leads/bulk-update", {"all": True, "set": {"status": "done"}})
    worker = start_worker(env, PROSAAS_LEADS_BATCH_SIZE="20")
    try:
        wait_for(lambda: (job_row(runtime, job["id"])["state"] or {}).get("done", 0) >= 1000)
        resp = a.client.post(f"/api/jobs/{job['id']}/cancel", headers=a.headers)
        assert resp.status_code in (200, 202), resp.get_json()
        wait_for(lambda: job_row(runtime, job["id"])["status"] == "cancelled", timeout=30)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    row = job_row(runtime, job["id"])
    updated = sql(
        runtime, "SELECT count(*) FROM leads WHERE business_id = :a AND status = 'done'", a=a.id
    )[0][0]
    assert 1000 <= updated < 20_000
    assert row["result"]["stopped"] is True
    assert row["result"]["updated"] == row["state"]["updated"] == updated
    assert (
        sql(
            runtime, "SELECT count(*) FROM leads WHERE status = 'done' AND business_id = :b", b=b.id
        )[0][0]
        == 0
    )


# -- the generated constraint ---------------------------------------------------------------------


def _allowed(runtime) -> set[str]:
    [(definition,)] = sql(
        runtime,
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'chk_job_type'",
    )
    import re

    return set(re.findall(r"'([a-z0-9_]+)'", definition))


def test_chk_job_type_allows_exactly_the_installed_types(runtime):
    ours = {"delete_leads", "delete_imported_leads", "update_leads", "delete_receipts_all"}
    assert ours <= set(runtime.registry.job_types)
    assert _allowed(runtime) == set(runtime.registry.job_types)


def test_disabling_receipts_with_receipt_jobs_keeps_the_type_allowed(runtime, cli, tenants):
    a, _ = tenants
    a.post("/api/receipts", {"amount_cents": 5}, status=201)
    job = a.post("/api/receipts/delete-all")
    run_worker(cli)
    assert a.job(job["id"])["status"] == "succeeded"
    off = {"PROSAAS_DISABLE_PLUGINS": "receipts"}
    plugins = cli("plugins", "--json", check=True, extra_env=off).stdout
    assert "delete_receipts_all" not in plugins
    cli("db", "upgrade", check=True, extra_env=off)
    assert "delete_receipts_all" in _allowed(runtime)
    assert "delete_leads" in _allowed(runtime)
    cli("db", "upgrade", check=True)  # re-enabled
    assert _allowed(runtime) == set(runtime.registry.job_types)
