"""HTTP GET for keys and discovery documents, with limits.

:func:`http_get` bounds each fetch: the whole exchange (connecting, TLS,
headers, body, redirects) must end within :data:`FETCH_DEADLINE` seconds (a
server trickling a byte at a time never trips a per-read timeout: a timer
shuts the fetch's sockets down), and at most :data:`MAX_FETCH_BYTES` of body
are read (a JWKS is a few KiB). Breaking either is a :class:`KeyFetchError`
naming the URL, the limit and what was found.

Each connect (the first one and those to redirect targets) gets at most the time
left before the deadline, and none is attempted once it has passed. Resolving the
host name is not covered: ``getaddrinfo`` cannot be interrupted, so a resolver that
hangs can hold a fetch past the deadline (for as long as the system resolver's own
timeouts allow).
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from .errors import KeyFetchError

__all__ = ["FETCH_DEADLINE", "MAX_FETCH_BYTES", "HttpGet", "http_get", "is_http_url"]

#: (url) -> (status, headers, body)
HttpGet = Callable[[str], tuple[int, Mapping[str, str], bytes]]
#: Seconds one fetch (connect, headers, body; redirects included) may take in all.
FETCH_DEADLINE = 10.0
#: Bytes of body one fetch reads at most: 1 MiB (Clerk's JWKS is about 1 KiB).
MAX_FETCH_BYTES = 1 << 20

#: The clock deadlines are measured with (replaced by tests).
_monotonic = time.monotonic


class _LimitExceeded(KeyFetchError):
    """A fetch broke a limit: its deadline or the size cap (``expected``, ``found``, ``fix``
    let :class:`JwksFetcher` say it in its own words)."""

    def __init__(self, url: str, expected: str, found: str, fix: str) -> None:
        super().__init__(f"Fetching {url}: expected {expected}; found {found}. Fix: {fix}")
        self.expected, self.found, self.fix = expected, found, fix


def _too_large(url: str, found: str, max_bytes: int) -> _LimitExceeded:
    return _LimitExceeded(
        url,
        f"a body of at most {_size(max_bytes)} ({max_bytes} bytes)",
        found,
        "point the provider at the JWKS document itself (jwks_url, or the issuer for "
        "discovery): a JWKS is a few KiB, so a bigger reply is another resource or a "
        "hostile server",
    )


def _size(n: int) -> str:
    return f"{n / (1 << 20):g} MiB" if n % (1 << 20) == 0 else f"{n} bytes"


class _Deadline:
    """Shuts down the sockets of one fetch when its time is up, which ends any read
    blocked on them (a socket timeout only bounds each read, not their sum)."""

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._ends = _monotonic() + seconds
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def left(self) -> float:
        """Seconds until the deadline (zero or less once it has passed)."""
        return 0.0 if self.expired else self._ends - _monotonic()

    def passed(self) -> bool:
        """True once the deadline has passed (even if the timer has not fired yet)."""
        return self.left() <= 0

    def watch(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._sockets.append(sock)
            expired = self.expired
        if expired:
            _shutdown(sock)
        return sock

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shutdown(sock)

    def cancel(self) -> None:
        self._timer.cancel()


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


class _HttpHandler(urllib.request.HTTPHandler):
    """urllib's HTTP handler with every connection's socket watched by a deadline."""

    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_watched(http.client.HTTPConnection, self._deadline), req)


class _HttpsHandler(urllib.request.HTTPSHandler):
    """urllib's HTTPS handler with every connection's socket watched by a deadline."""

    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(
            _watched(http.client.HTTPSConnection, self._deadline),
            req,
            context=self._context,  # type: ignore[attr-defined]
        )


def _watched(kind: type[http.client.HTTPConnection], deadline: _Deadline) -> Any:
    """A connection factory for ``do_open`` whose TCP sockets ``deadline`` watches
    (TLS runs on top of that socket, so its handshake is covered too). Each connect
    may take at most the time left; none is made once the deadline has passed."""

    def connect(
        address: tuple[str, int], timeout: Any = None, *args: Any, **kwargs: Any
    ) -> socket.socket:
        left = deadline.left()
        if left <= 0:
            raise TimeoutError("the fetch's deadline passed before connecting")
        if not isinstance(timeout, int | float) or timeout > left:
            timeout = left  # also replaces socket's "global default" (no timeout)
        return deadline.watch(socket.create_connection(address, timeout, *args, **kwargs))

    def make(host: str, **kwargs: Any) -> http.client.HTTPConnection:
        connection = kind(host, **kwargs)
        connection._create_connection = connect  # type: ignore[attr-defined]
        return connection

    return make


def is_http_url(url: str) -> bool:
    """Whether ``url`` is an ``http://`` or ``https://`` URL with a host: the only ones
    fetched (not ``file:``, ``data:``, FTP, nor ``https:host`` without ``//``)."""
    parts = urllib.parse.urlsplit(url)
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


def _not_http(url: str) -> _LimitExceeded:
    scheme = urllib.parse.urlsplit(url).scheme
    return _LimitExceeded(
        url,
        "an http:// or https:// URL",
        f"a {scheme + ':' if scheme else 'relative'} URL",
        "give the JWKS or issuer URL over https (keys are fetched over HTTP only, as "
        "Convex does: never a local file, data: or FTP)",
    )


class _RedirectHandler(urllib.request.HTTPRedirectHandler):
    """urllib's redirects, to http(s) targets only (it would follow one to FTP)."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        if not is_http_url(newurl):
            raise _not_http(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _read_capped(response: Any, url: str, max_bytes: int) -> bytes:
    """The body of ``response``, refusing more than ``max_bytes`` without reading them."""
    length = response.headers.get("Content-Length")
    if length is not None and length.strip().isdigit() and int(length) > max_bytes:
        raise _too_large(url, f"Content-Length {int(length)}", max_bytes)
    parts: list[bytes] = []
    size = 0
    while True:
        chunk = response.read(min(65536, max_bytes + 1 - size))
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(url, f"more than {max_bytes} bytes", max_bytes)


def http_get(
    url: str,
    timeout: float = 5.0,
    *,
    deadline: float = FETCH_DEADLINE,
    max_bytes: int = MAX_FETCH_BYTES,
) -> tuple[int, Mapping[str, str], bytes]:
    """GET ``url`` (http or https only, redirects too) with the standard library;
    returns status, headers and body.

    ``timeout`` bounds each socket operation; ``deadline`` the whole fetch (connect,
    headers, body, redirects): each connect gets at most the time left, and past it
    the sockets are shut down (resolving a host name is not covered: a hanging DNS
    resolver can outlast the deadline). At most
    ``max_bytes`` of body are read. Cost: one HTTP exchange and a timer thread
    that lives as long as the fetch. Raises :class:`KeyFetchError` past the
    deadline or the cap, and what urllib raises for other failures.

    Example::

        status, headers, body = http_get("https://x.clerk.accounts.dev/.well-known/jwks.json")
    """
    if not is_http_url(url):
        raise _not_http(url)
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    watch = _Deadline(deadline)
    # Only what an HTTP fetch needs: no file:, data: or FTP handler (any other scheme,
    # also a redirect's, is an error).
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        urllib.request.UnknownHandler(),
        _HttpHandler(watch),
        _HttpsHandler(watch),
        urllib.request.HTTPDefaultErrorHandler(),
        _RedirectHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    try:
        try:
            with opener.open(request, timeout=min(timeout, deadline)) as response:
                status, headers = response.status, dict(response.headers)
                body = _read_capped(response, url, max_bytes)
        except urllib.error.HTTPError as error:
            with error:
                status, headers = error.code, dict(error.headers or {})
                body = _read_capped(error, url, max_bytes)
        if watch.passed():  # a body cut short by the deadline looks complete
            raise OSError("deadline")
        return status, headers, body
    except (OSError, http.client.HTTPException, ValueError) as error:
        if not watch.passed():
            raise
        raise _LimitExceeded(
            url,
            f"a complete reply within {deadline:g} s",
            f"none after {deadline:g} s (the server is too slow, or stalls)",
            "check that the URL answers quickly from this host (a JWKS endpoint replies "
            "in well under a second); the deadline covers connecting, the headers and "
            "the body",
        ) from error
    finally:
        watch.cancel()
