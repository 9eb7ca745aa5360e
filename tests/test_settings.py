"""Typed settings for plugins: `Settings.get_int/get_float/get_bool/get_list/get_duration`, one
error type (`SettingError`) that names the key and the bad value, shown as one line by the CLI
and by a worker's service supervisor, never as a traceback."""

from __future__ import annotations

import pytest

from prosaas_core.errors import ConfigError, SettingError
from prosaas_core.settings import Settings
from prosaas_core.testing import wait_until


def s(**env: str) -> Settings:
    return Settings(env=env)


def test_unset_or_blank_gives_the_default():
    for getter, default in (
        (Settings.get_int, 7),
        (Settings.get_float, 2.5),
        (Settings.get_bool, True),
        (Settings.get_duration, 30.0),
    ):
        assert getter(s(), "K", default) == default
        assert getter(s(K=""), "K", default) == default
        assert getter(s(K="  "), "K", default) == default
    assert s().get_list("K", ("a", "b")) == ("a", "b")


def test_good_values_parse():
    assert s(K=" 8 ").get_int("K", 1) == 8
    assert s(K="-3").get_int("K", 1) == -3
    assert s(K="2.5").get_float("K", 1.0) == 2.5
    assert s(K="1e3").get_float("K", 1.0) == 1000.0
    for raw, want in (("1", True), ("TRUE", True), ("yes", True), ("on", True)):
        assert s(K=raw).get_bool("K") is want
    for raw in ("0", "false", "No", "OFF"):
        assert s(K=raw).get_bool("K", True) is False
    assert s(K="a, b,,c, a").get_list("K") == ("a", "b", "c")
    assert s(K="ringing").get_list("K", choices=("ringing", "answered")) == ("ringing",)
    for raw, seconds in (
        ("30", 30.0),
        ("1.5", 1.5),
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("5min", 300.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("2 H", 7200.0),
    ):
        assert s(K=raw).get_duration("K", 0.0) == seconds, raw


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: s(K="8.0").get_int("K", 1), "K must be an integer, got '8.0'"),
        (lambda: s(K="lots").get_int("K", 1), "K must be an integer, got 'lots'"),
        (lambda: s(K="0").get_int("K", 1, minimum=1), "K must be an integer >= 1, got '0'"),
        (lambda: s(K="9").get_int("K", 1, maximum=8), "K must be an integer <= 8, got '9'"),
        (
            lambda: s(K="0").get_int("K", 1, minimum=1, maximum=8),
            "K must be an integer between 1 and 8, got '0'",
        ),
        (lambda: s(K="fast").get_float("K", 1.0), "K must be a number, got 'fast'"),
        (lambda: s(K="nan").get_float("K", 1.0), "K must be a finite number, got 'nan'"),
        (
            lambda: s(K="0.01").get_float("K", 1.0, minimum=0.1),
            "K must be a number >= 0.1, got '0.01'",
        ),
        (
            lambda: s(K="maybe").get_bool("K"),
            "K must be one of 1, true, yes, on, 0, false, no, off, got 'maybe'",
        ),
        (
            lambda: s(K="ringing,busy").get_list("K", choices=("ringing", "answered")),
            "K must be a comma-separated list of ringing, answered, got 'ringing,busy'",
        ),
        (
            lambda: s(K="10 minutes").get_duration("K", 1.0),
            "K must be a duration such as 30, 500ms, 30s, 5m, 2h or 1d, got '10 minutes'",
        ),
        (
            lambda: s(K="-1").get_duration("K", 1.0),
            "K must be a duration such as 30, 500ms, 30s, 5m, 2h or 1d, got '-1'",
        ),
        (
            lambda: s(K="10ms").get_duration("K", 1.0, minimum=0.5),
            "K must be a duration in seconds >= 0.5, got '10ms'",
        ),
    ],
)
def test_a_bad_value_is_one_error_naming_the_key_and_the_value(call, message):
    with pytest.raises(SettingError) as info:
        call()
    assert str(info.value) == message
    assert info.value.key == "K"
    assert isinstance(info.value, ConfigError)  # what the CLI and the worker turn into one line


def test_core_settings_use_the_same_error():
    with pytest.raises(SettingError, match="PROSAAS_LEASE_TTL must be a number, got 'soon'"):
        Settings.from_env({"PROSAAS_LEASE_TTL": "soon"})


def test_a_plugin_cli_command_with_a_bad_setting_fails_in_one_line(cli, business):
    proc = cli(
        "outbound-calls",
        "limits",
        "--business",
        str(business),
        extra_env={"OUTBOUND_CALLS_MAX_CONCURRENT": "lots"},
    )
    assert proc.returncode == 1, proc.stderr
    want = "error: OUTBOUND_CALLS_MAX_CONCURRENT must be an integer, got 'lots'"
    assert proc.stderr.strip() == want


def test_a_service_with_a_bad_setting_logs_one_line_and_no_traceback(runtime, start_worker):
    w = start_worker(extra_env={"ACME_TICKER_INTERVAL": "fast", "PROSAAS_SERVICE_BACKOFF": "0.2"})
    out = w.wait_for_log("ACME-TICKER STARTED", count=2)
    line = (
        "SERVICE CRASHED acme-ticker: ACME_TICKER_INTERVAL must be a duration such as 30, "
        "500ms, 30s, 5m, 2h or 1d, got 'fast'; restarting in 0.2s"
    )
    wait_until(lambda: line in w.log(), 10, "the one-line crash")
    assert "Traceback" not in w.log(), out


def _held_open_after_burst(rt, n: int) -> int:
    """Connections the runtime's pool keeps open after `n` were in use at once."""
    conns = [rt.engine.connect() for _ in range(n)]
    for c in conns:
        c.exec_driver_sql("SELECT 1")
    for c in conns:
        c.close()
    return rt.engine.pool.checkedin()


def test_the_pool_keeps_a_burst_of_connections_open_up_to_the_pool_size(env):
    from prosaas_core import Runtime

    rt = Runtime(Settings.from_env(env))
    try:  # the default keeps 10 (SQLAlchemy's own default would close all but 5 again)
        assert _held_open_after_burst(rt, 12) == 10
    finally:
        rt.close()
    rt = Runtime(Settings.from_env({**env, "PROSAAS_DB_POOL_SIZE": "14"}))
    try:
        assert _held_open_after_burst(rt, 12) == 12
    finally:
        rt.close()


def test_a_bad_pool_size_is_one_error():
    with pytest.raises(
        SettingError, match="PROSAAS_DB_POOL_SIZE must be an integer between 1 and 1000, got '0'"
    ):
        Settings.from_env({"PROSAAS_DB_POOL_SIZE": "0"})
    with pytest.raises(SettingError, match="PROSAAS_DB_MAX_OVERFLOW must be an integer"):
        Settings.from_env({"PROSAAS_DB_MAX_OVERFLOW": "lots"})
