"""Redis Sentinel failover under running workers: a master, a replica and three sentinels
started here on spare ports (``redis-server --sentinel``), two real ``prosaas worker``
processes and flow-limited jobs flowing; the master is SIGKILLed mid-run.
"""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import text

from prosaas_core import migrate
from prosaas_core.jobs.enqueue import enqueue
from prosaas_core.models import Business
from prosaas_core.plugins import get_plugin_manager
from prosaas_core.runtime import Runtime
from prosaas_core.settings import Settings
from prosaas_core.testing import wait_until
from tests.scale.servers import SentinelCluster
from tests.test_flow_control import max_overlap

pytestmark = pytest.mark.slow

#: the acme plugin's acme_slot: concurrency_per_business=2
LIMIT = 2


@pytest.fixture
def cluster():
    c = SentinelCluster(down_after_ms=1000).start()
    yield c
    c.close()


@pytest.fixture
def sentinel_env(env, cluster):
    env.update(
        REDIS_SENTINELS=cluster.sentinels_env,
        REDIS_SENTINEL_MASTER=cluster.name,
        # with Sentinel only the database number of REDIS_URL is used
        REDIS_URL="redis://ignored:1/0",
        PROSAAS_FLOW_LEASE="3",
        PROSAAS_LEASE_TTL="3",
    )
    return env


def _runs(rt) -> list[dict]:
    with rt.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(text("SELECT * FROM acme_runs"))]


def _statuses(rt) -> dict[str, int]:
    with rt.engine.connect() as conn:
        return dict(
            conn.execute(text("SELECT status, count(*) FROM background_jobs GROUP BY 1")).all()
        )


def test_master_sigkill_fails_over_and_loses_or_doubles_nothing(
    sentinel_env, cluster, start_worker, cli
):
    rt = Runtime(Settings.from_env(sentinel_env), pm=get_plugin_manager(load_entrypoints=True))
    migrate.upgrade(rt)
    with rt.session() as s:
        rows = [Business(name=f"b{i}") for i in range(3)]
        s.add_all(rows)
        s.flush()
        bs = [b.id for b in rows]
    ids = [enqueue(rt, "acme_slot", b, {"seconds": 0.1}).id for b in bs for _ in range(15)]
    start_worker()
    start_worker()
    wait_until(lambda: _statuses(rt).get("succeeded", 0) >= 10, 60, "10 jobs done")

    # keep enqueueing through the switch: rows commit whether or not the push reaches Redis
    stop = threading.Event()

    def producer() -> None:
        i = 0
        while not stop.is_set() and i < 30:
            ids.append(enqueue(rt, "acme_slot", bs[i % 3], {"seconds": 0.1}).id)
            i += 1
            time.sleep(0.1)

    doctor = cli("doctor").stdout
    assert (
        f"ok      Redis topology: sentinel master 'prosaas' at 127.0.0.1:{cluster.master_port}, "
        f"3/3 sentinel(s) answering, replicas: 127.0.0.1:{cluster.replica_port} (online)"
    ) in doctor, doctor

    t = threading.Thread(target=producer)
    t.start()
    old = cluster.master_addr()
    cluster.kill(cluster.master_port)
    killed_at = time.time()
    wait_until(lambda: cluster.master_addr() not in (None, old), 30, "the replica promoted")
    promoted_at = time.time()
    assert cluster.master_addr() == ("127.0.0.1", cluster.replica_port)

    # work continues within 10 s of the promotion
    wait_until(
        lambda: any(r["started_at"] > promoted_at for r in _runs(rt)), 10, "a job after promotion"
    )
    t.join(30)
    stop.set()
    total = len(ids)
    wait_until(lambda: _statuses(rt).get("succeeded", 0) >= total, 120, f"{total} jobs done")

    got = _runs(rt)
    assert _statuses(rt) == {"succeeded": total}
    # exactly once: one run per committed job (the claim and the fence make a redelivery a no-op)
    assert sorted(r["job_id"] for r in got) == sorted(ids)
    for b in bs:
        spans = [(r["started_at"], r["finished_at"]) for r in got if r["business_id"] == b]
        assert max_overlap(spans) <= LIMIT, (b, killed_at)
    rt.close()


def test_hung_sentinels_fail_a_request_within_a_timeout_each(sentinel_env, cluster):
    """Every sentinel hung (SIGSTOP): the request client's master lookup gives up after one
    PROSAAS_PUSH_TIMEOUT per sentinel (then the API answers 503), not after redis-py's
    10 retries with backoff on each (about 15 s a sentinel)."""
    import redis

    rt = Runtime(Settings.from_env({**sentinel_env, "PROSAAS_PUSH_TIMEOUT": "1"}))
    try:
        assert rt.request_redis.ping()
        rt.request_redis.connection_pool.disconnect()  # the next command looks the master up
        for port in cluster.sentinel_ports:
            cluster.freeze(port)
        t = time.monotonic()
        with pytest.raises(redis.ConnectionError):  # MasterNotFoundError is one
            rt.request_redis.ping()
        took = time.monotonic() - t
    finally:
        for port in cluster.sentinel_ports:
            cluster.thaw(port)
        rt.close()
    assert took < len(cluster.sentinel_ports) * 1.0 + 1.5, took
