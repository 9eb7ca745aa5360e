"""/metrics and /readyz details are for operators (a token or an operator network), against a
real `prosaas serve`."""

from __future__ import annotations

import requests

from prosaas_core.testing import ServeProcess

TOKEN = "metrics-token-for-tests"


def test_metrics_and_readyz_details_need_an_operator(env, runtime, tmp_path):
    serve_env = {**env, "PROSAAS_METRICS_TOKEN": TOKEN, "PROSAAS_OPERATOR_NETWORKS": ""}
    with ServeProcess(serve_env, log_path=tmp_path / "serve.log") as srv:
        anon = requests.get(srv.url + "/metrics", timeout=10)
        assert anon.status_code == 403 and set(anon.json()) == {"error", "details"}
        bad = requests.get(srv.url + "/metrics", headers={"Authorization": "Bearer x"}, timeout=10)
        assert bad.status_code == 403
        ok = requests.get(
            srv.url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
        )
        assert ok.status_code == 200 and "prosaas_jobs" in ok.text

        assert requests.get(srv.url + "/readyz", timeout=10).json() == {"status": "ready"}
        detailed = requests.get(
            srv.url + "/readyz", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
        ).json()
        assert detailed["checks"]["database"] == "ok"


def test_not_ready_without_details_for_anyone(env, runtime, tmp_path):
    serve_env = {**env, "REDIS_URL": "redis://127.0.0.1:1/0", "PROSAAS_OPERATOR_NETWORKS": ""}
    with ServeProcess(serve_env, log_path=tmp_path / "serve.log") as srv:
        r = requests.get(srv.url + "/readyz", timeout=20)
        assert r.status_code == 503
        assert r.json() == {"error": "Not ready", "details": None}


def test_loopback_is_an_operator_by_default(env, runtime, tmp_path):
    with ServeProcess(env, log_path=tmp_path / "serve.log") as srv:
        assert requests.get(srv.url + "/metrics", timeout=10).status_code == 200
        assert "checks" in requests.get(srv.url + "/readyz", timeout=10).json()
