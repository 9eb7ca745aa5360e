"""The downloader against a local HTTP server standing in for Twilio."""

from __future__ import annotations

import threading
import time

import pytest
from prosaas_recordings.download import DownloadAborted, DownloadError, Limits, fetch, host_allowed
from prosaas_recordings.httpclient import HttpClient
from prosaas_recordings.testing import StubTwilio

TOKEN = "tok"
ACCOUNT = "AC" + "2" * 32


@pytest.fixture
def stub():
    with StubTwilio(account_sid=ACCOUNT, auth_token=TOKEN, size=200_000) as s:
        yield s


@pytest.fixture
def limits(stub):
    return Limits(
        allowed_hosts=frozenset({stub.host}),
        allow_http=True,
        connect_timeout=1,
        read_timeout=0.3,
        max_bytes=1_000_000,
    )


def _fetch(stub, limits, tmp_path, sid="RE1", **kw):
    dest = tmp_path / "rec" / "1" / "CA1.mp3"
    tmp = tmp_path / "rec" / ".partial" / "task1.1.part"
    kw.setdefault("auth", (ACCOUNT, TOKEN))
    size = fetch(stub.url(1, sid) + ".mp3", dest, tmp=tmp, limits=limits, **kw)
    return dest, size


def files(tmp_path):
    return sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())


def test_complete_file_with_basic_auth(stub, limits, tmp_path):
    dest, size = _fetch(stub, limits, tmp_path)
    assert size == 200_000 and dest.read_bytes() == stub.content("RE1")
    assert files(tmp_path) == ["rec/1/CA1.mp3"]
    assert stub.unauthorized == 0


def test_wrong_credentials_are_permanent(stub, limits, tmp_path):
    with pytest.raises(DownloadError) as err:
        _fetch(stub, limits, tmp_path, auth=(ACCOUNT, "wrong"))
    assert err.value.reason == "HTTP 401" and not err.value.retryable
    assert files(tmp_path) == []


@pytest.mark.parametrize("step", ["500", "503", "404", "429"])
def test_server_errors_and_not_yet_available_are_retryable(stub, limits, tmp_path, step):
    stub.plan("RE1", [step])
    with pytest.raises(DownloadError) as err:
        _fetch(stub, limits, tmp_path)
    assert err.value.retryable and err.value.reason == f"HTTP {step}"
    assert files(tmp_path) == []
    _fetch(stub, limits, tmp_path)  # the next request succeeds
    assert files(tmp_path) == ["rec/1/CA1.mp3"]


@pytest.mark.parametrize("step", ["hang", "drip"])
def test_a_server_that_stops_answering_times_out(stub, limits, tmp_path, step):
    stub.plan("RE1", [step])
    started = time.monotonic()
    with pytest.raises(DownloadError) as err:
        _fetch(stub, limits, tmp_path)
    assert time.monotonic() - started < 3
    assert err.value.retryable
    assert files(tmp_path) == []  # no partial file left behind


def test_a_truncated_body_is_never_renamed_into_place(stub, limits, tmp_path):
    stub.plan("RE1", ["short"])
    with pytest.raises(DownloadError) as err:
        _fetch(stub, limits, tmp_path)
    assert err.value.retryable
    assert files(tmp_path) == []


def test_size_cap(stub, limits, tmp_path):
    small = Limits(**{**limits.__dict__, "max_bytes": 150_000})
    with pytest.raises(DownloadError) as err:
        _fetch(stub, small, tmp_path)
    assert not err.value.retryable and "cap" in err.value.reason
    assert files(tmp_path) == []


def test_hosts_outside_the_allowed_list_are_never_contacted(stub, limits, tmp_path):
    other = Limits(allowed_hosts=frozenset({"api.twilio.com"}), allow_http=True)
    with pytest.raises(DownloadError) as err:
        _fetch(stub, other, tmp_path)
    assert not err.value.retryable and "not allowed" in err.value.reason
    assert sum(stub.requests.values()) == 0


def test_host_rules():
    lim = Limits(allowed_hosts=frozenset({"api.twilio.com", "127.0.0.1:8080"}))
    assert host_allowed("https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1", lim)
    assert host_allowed("https://API.twilio.com/x", lim)
    assert not host_allowed("http://api.twilio.com/x", lim)  # plain http refused by default
    assert not host_allowed("https://api.twilio.com.evil.example/x", lim)
    assert not host_allowed("https://user:pw@api.twilio.com/x", lim)
    assert not host_allowed("ftp://api.twilio.com/x", lim)
    assert not host_allowed("https://127.0.0.1/x", lim)
    assert host_allowed("https://127.0.0.1:8080/x", lim)


def test_abort_stops_between_chunks(stub, limits, tmp_path):
    stub.plan("RE1", ["drip"])
    slow = Limits(**{**limits.__dict__, "read_timeout": 5})
    abort = threading.Event()
    seen = []

    def progress(n):
        seen.append(n)
        abort.set()

    with pytest.raises(DownloadAborted):
        _fetch(stub, slow, tmp_path, abort=abort, on_progress=progress, http=HttpClient())
    assert seen and files(tmp_path) == []


@pytest.mark.timeout(30)  # without the socket deadline this download would last for hours
def test_total_deadline_is_enforced_at_the_socket(stub, limits, tmp_path):
    """A server sending a byte every 0.1 s never trips a 1 s read timeout; the 1.5 s total
    deadline still ends the download at 1.5 s, not when the server gives up."""
    stub.plan("RE1", ["trickle"])
    slow = Limits(**{**limits.__dict__, "read_timeout": 1, "total_timeout": 1.5})
    t0 = time.monotonic()
    with pytest.raises(DownloadError) as err:
        _fetch(stub, slow, tmp_path, http=HttpClient())
    took = time.monotonic() - t0
    assert err.value.reason == "download deadline exceeded" and err.value.retryable
    assert 1.4 <= took < 4, took
    assert files(tmp_path) == []


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://no-such-host.invalid/rec/1/RE1.mp3", "dns: cannot resolve no-such-host.invalid"),
        ("http://127.0.0.1:1/rec/1/RE1.mp3", "connection failed: ConnectionRefusedError"),
    ],
)
def test_dns_failure_and_refused_connection_name_their_cause(tmp_path, url, reason):
    host = url.split("/")[2]
    lim = Limits(allowed_hosts=frozenset({host, host.split(":")[0]}), allow_http=True)
    with pytest.raises(DownloadError) as err:
        fetch(url, tmp_path / "a.mp3", tmp=tmp_path / "a.part", auth=None, limits=lim)
    assert err.value.reason.startswith(reason) and err.value.retryable
    assert "timeout" not in err.value.reason
