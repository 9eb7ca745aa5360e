"""`POST /api/jobs` answers once the row is committed and pushes behind the answer: every
accepted job reaches its RQ queue exactly once, whatever the concurrency, even when Redis has
lost the push scripts, and the push is logged as an inline one was."""

from __future__ import annotations

import threading

import redis
import requests

from prosaas_core.jobs.transport import rq_job_id
from prosaas_core.testing import ServeProcess, bearer, business_with_token, wait_until

CLIENTS = 8
PER_CLIENT = 40


def _post_many(url: str, token: str, clients: int, each: int) -> list[int]:
    ids: list[int] = []
    lock = threading.Lock()
    failures: list[str] = []

    def client(n: int) -> None:
        s = requests.Session()
        for i in range(each):
            r = s.post(
                url + "/api/jobs",
                json={"job_type": "acme_echo", "payload": {"message": f"{n}-{i}"}},
                headers=bearer(token),
                timeout=15,
            )
            with lock:
                if r.status_code == 202:
                    ids.append(r.json()["id"])
                else:
                    failures.append(r.text)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:3]
    return ids


def _queued(r: redis.Redis) -> list[bytes]:
    return r.lrange("rq:queue:default", 0, -1)


def test_every_accepted_job_is_pushed_once(env, runtime, redis_url, tmp_path):
    _, token = business_with_token(runtime, "many")
    r = redis.Redis.from_url(redis_url)
    log = tmp_path / "serve.log"
    with ServeProcess(env, workers=2, threads=4, log_path=log) as srv:
        ids = _post_many(srv.url, token, CLIENTS, PER_CLIENT)
        assert len(ids) == CLIENTS * PER_CLIENT
        wait_until(lambda: len(_queued(r)) >= len(ids), 10, "every accepted job pushed")
    queued = _queued(r)
    assert sorted(queued) == sorted(rq_job_id(i).encode() for i in ids)  # each once
    # the RQ job is RQ's own: a worker can run it
    assert r.hget(f"rq:job:{rq_job_id(ids[0])}", "status") == b"queued"
    text = log.read_text()
    assert all(f"Enqueued job_id={i} job_type=acme_echo" in text for i in ids)
    assert "Traceback" not in text


def test_scripts_redis_lost_are_loaded_again(env, runtime, redis_url, tmp_path):
    _, token = business_with_token(runtime, "flushed")
    r = redis.Redis.from_url(redis_url)
    with ServeProcess(env, workers=1, threads=2, log_path=tmp_path / "serve.log") as srv:
        first = _post_many(srv.url, token, 1, 1)
        wait_until(lambda: len(_queued(r)) == 1, 10, "the first job pushed")
        r.script_flush()  # a Redis restarted empty (or SCRIPT FLUSH) knows no script
        ids = _post_many(srv.url, token, 4, 5)
        wait_until(lambda: len(_queued(r)) == 1 + len(ids), 10, "the jobs after the flush pushed")
    assert sorted(_queued(r)) == sorted(rq_job_id(i).encode() for i in first + ids)
    assert "not pushed" not in (tmp_path / "serve.log").read_text()


def test_a_batch_redis_holds_only_some_scripts_of_pushes_each_job_once(runtime, redis_url):
    """One script per (queue, timeout): a batch can mix one Redis holds with one it does not.
    Only the refused calls are sent again, so the others are not pushed twice."""
    from prosaas_core.jobs.transport import push_many

    r = redis.Redis.from_url(redis_url)
    r.script_flush()
    # a first batch has its script loaded (refused, loaded, sent again): the default queue's
    assert push_many(runtime, [(1, "default", "acme_echo")]) == [1]
    r.delete("rq:queue:default")
    rows = [(2, "default", "acme_echo"), (3, "acme", "acme_count"), (4, "default", "acme_echo")]
    assert push_many(runtime, rows) == [2, 3, 4]
    assert r.lrange("rq:queue:default", 0, -1) == [b"prosaas-2", b"prosaas-4"]
    assert r.lrange("rq:queue:acme", 0, -1) == [b"prosaas-3"]


def test_without_a_pusher_thread_the_api_pushes_inline(client, auth, redis_url, monkeypatch):
    """A process that cannot start a thread (at its limit) still pushes, before the answer."""
    start = threading.Thread.start

    def refuse(thread: threading.Thread) -> None:
        if thread.name == "prosaas-pusher":
            raise RuntimeError("can't start new thread")
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", refuse)
    job = {"job_type": "acme_echo", "payload": {"message": "x"}}
    r = client.post("/api/jobs", json=job, headers=auth)
    assert r.status_code == 202, r.get_json()
    # no waiting: it was pushed before the answer
    assert _queued(redis.Redis.from_url(redis_url)) == [rq_job_id(r.get_json()["id"]).encode()]
