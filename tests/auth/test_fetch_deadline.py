"""http_get's total deadline covers connecting, also to a redirect's target (review 10)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

import auth
from auth import fetch


class FakeTime:
    """fetch's monotonic clock, moved by the test (the deadline's timer thread still
    runs on real time, far beyond these tests)."""

    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake_time(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    clock = FakeTime()
    monkeypatch.setattr(fetch, "_monotonic", clock)
    return clock


@pytest.fixture
def redirecting() -> Iterator[str]:
    """A server whose /start redirects to its /jwks."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/start":
                self.send_response(302)
                self.send_header("Location", f"http://127.0.0.1:{port}/jwks")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = b'{"keys": []}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            return None

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port = httpd.server_port
    thread = threading.Thread(target=lambda: httpd.serve_forever(poll_interval=0.05))
    thread.daemon = True
    thread.start()
    yield f"http://127.0.0.1:{port}"
    httpd.shutdown()
    httpd.server_close()


class Connects:
    """socket.create_connection recording each connect's timeout; the first ``real``
    connect and then spend ``spend`` seconds of the fake clock, later ones stall
    (the fake clock runs to their timeout) and time out."""

    def __init__(self, clock: FakeTime, real: int, spend: float) -> None:
        self.clock, self.real, self.spend = clock, real, spend
        self.timeouts: list[float] = []
        self._create = socket.create_connection

    def __call__(self, address: Any, timeout: Any = None, *args: Any, **kwargs: Any) -> Any:
        self.timeouts.append(timeout)
        if len(self.timeouts) <= self.real:
            sock = self._create(address, timeout, *args, **kwargs)
            self.clock.now += self.spend
            return sock
        self.clock.now += timeout
        raise TimeoutError("timed out")


def test_connecting_is_bounded_by_the_time_left(
    fake_time: FakeTime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """socket.create_connection got the whole per-read timeout (5 s) whatever the deadline;
    a connect that stalls now gets at most the time left and ends as a deadline error."""
    connects = Connects(fake_time, real=0, spend=0.0)
    monkeypatch.setattr(socket, "create_connection", connects)
    with pytest.raises(auth.KeyFetchError, match=r"(?s)127.0.0.1:9/jwks.*within 2 s.*Fix:"):
        fetch.http_get("http://127.0.0.1:9/jwks", timeout=5.0, deadline=2.0)
    assert connects.timeouts == [2.0]


def test_a_redirect_target_gets_only_the_time_left(
    redirecting: str, fake_time: FakeTime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connect to a redirect's target got the full 5 s timeout after 9 s of a 10 s
    deadline were spent (the review measured 13 s); now it gets the 1 s left."""
    connects = Connects(fake_time, real=1, spend=9.0)
    monkeypatch.setattr(socket, "create_connection", connects)
    with pytest.raises(auth.KeyFetchError, match=r"(?s)/start.*within 10 s.*Fix:"):
        fetch.http_get(redirecting + "/start", timeout=5.0, deadline=10.0)
    assert connects.timeouts == [5.0, pytest.approx(1.0)]


def test_no_connect_is_made_once_the_deadline_has_passed(
    redirecting: str, fake_time: FakeTime, monkeypatch: pytest.MonkeyPatch
) -> None:
    connects = Connects(fake_time, real=1, spend=10.5)
    monkeypatch.setattr(socket, "create_connection", connects)
    with pytest.raises(auth.KeyFetchError, match=r"(?s)/start.*within 10 s.*Fix:"):
        fetch.http_get(redirecting + "/start", timeout=5.0, deadline=10.0)
    assert connects.timeouts == [5.0]  # the redirect's target was not connected to


def test_a_fetch_within_its_deadline_still_works(
    redirecting: str, fake_time: FakeTime, monkeypatch: pytest.MonkeyPatch
) -> None:
    connects = Connects(fake_time, real=2, spend=1.0)
    monkeypatch.setattr(socket, "create_connection", connects)
    status, _, body = fetch.http_get(redirecting + "/start", timeout=5.0, deadline=10.0)
    assert (status, body) == (200, b'{"keys": []}')
    assert connects.timeouts == [5.0, pytest.approx(5.0)]


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/hostname",
        "data:application/json,%7B%22keys%22%3A%5B%5D%7D",
        "ftp://x/",
        "https:issuer.example/jwks",  # no host: found by review, passed one of two checks
    ],
)
def test_only_http_and_https_urls_are_fetched(url: str) -> None:
    """http_get opened any URL urllib can (a local file, data:, FTP), and a discovery
    document's jwks_uri was fetched whatever its scheme: an issuer could make the
    verifying host read a local file (a FIFO or /dev/stdin hangs it past every
    deadline, which only covers sockets). Convex (reqwest) and pyjwt 2.15 fetch keys
    over http(s) only."""
    with pytest.raises(auth.KeyFetchError, match=r"(?s)expected an http:// or https:// URL"):
        fetch.http_get(url)


def test_a_discovery_document_must_name_an_http_jwks_uri() -> None:
    asked: list[str] = []

    def get(url: str) -> tuple[int, dict[str, str], bytes]:
        asked.append(url)
        body = b'{"issuer": "https://issuer.example", "jwks_uri": "file:///etc/hostname"}'
        return 200, {"Content-Type": "application/json"}, body

    fetcher = auth.JwksFetcher(discovery_issuer="https://issuer.example", get=get)
    with pytest.raises(auth.KeyFetchError, match=r"(?s)jwks_uri.*http.*file:///etc/hostname"):
        fetcher.key("kid", "RS256")
    assert asked == ["https://issuer.example/.well-known/openid-configuration"]
