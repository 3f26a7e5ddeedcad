"""The ``http.server`` front end: :class:`HttpServer`, the server ``Engine.serve_http`` runs.

``Engine.serve_http(host, port)`` runs an :class:`HttpServer` on a daemon thread; each
connection is served on a thread of its own (:mod:`engine.httpconnections`: the cap
on connections, idle eviction, shutdown). ``_Handler`` keeps connections alive, reads
each request's head strictly (:mod:`engine.httphead`), refuses a request whose ``Host``
or body length it cannot trust, hands the others to :func:`engine.httphandling.handle`
(the storage endpoints of :mod:`engine.httpstorage` and the HTTP actions), and sends
the answer. The other front end, for hosts with their own web server, is
:class:`engine.wsgi.WsgiApp`. :func:`handle`, :class:`Response`, :class:`WsgiApp` and
:data:`DEFAULT_MAX_UPLOAD_SIZE` are importable from here too.

Limits of :class:`HttpServer` (arguments of ``Engine.serve_http``):
``timeout`` (default :data:`DEFAULT_TIMEOUT`, 120 s, Convex's request
timeout) bounds each socket read and write, so a client that stops (headers never
finished, a body never sent, a download never read) is disconnected instead of
holding its thread forever. It bounds no whole request: a client that sends a byte
of its headers within every ``timeout`` keeps its connection and its thread (a
slowloris attack; put a reverse proxy in front of a server open to the internet), and
past ``max_connections`` of those, new clients are answered ``503``. Nor does it bound
how long an HTTP action's handler runs. ``max_connections``
(default :data:`DEFAULT_MAX_CONNECTIONS`) caps the connections served at
once: one more is answered ``503`` and closed, unless a kept-alive connection is idle
(it is then closed to make room). An idle kept-alive connection is closed after
:data:`KEEP_ALIVE_TIMEOUT` (5 s).
"""

from __future__ import annotations

import errno
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

from .httpbodies import _PIECE, DEFAULT_MAX_UPLOAD_SIZE, _content_length, _read_chunked
from .httpconnections import CLOSING, ConnectionServer, bytes_waiting
from .httphandling import (
    _absolute_form,
    _forwarded_scheme,
    _refuse_framing,
    _valid_host,
    handle,
)
from .httphead import _read_head
from .httpmessages import escape_raw_path
from .httpresponses import Response, _error
from .wsgi import WsgiApp

if TYPE_CHECKING:
    from .functions import Runtime

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_UPLOAD_SIZE",
    "DEFAULT_TIMEOUT",
    "KEEP_ALIVE_TIMEOUT",
    "HttpServer",
    "Response",
    "WsgiApp",
    "handle",
]

#: Seconds a socket read or write may wait before the connection is dropped
#: (Convex's request timeout: 2 minutes).
DEFAULT_TIMEOUT = 120.0
#: Connections an :class:`HttpServer` serves at once (one thread each).
DEFAULT_MAX_CONNECTIONS = 64
#: Seconds a kept-alive connection may wait idle for its next request before it is
#: closed (Node's and uvicorn's 5 s); never more than the server's ``timeout``.
KEEP_ALIVE_TIMEOUT = 5.0
#: Seconds ``HttpServer.close`` lets requests in flight finish (and answer), and then
#: waits for the threads of those it had to cut short.
_GRACE = 5.0
#: Seconds a connection accepted as the server closes waits for its first request.
_CLOSING_PEEK = 0.2
#: How much of a refused request body is read and dropped before the connection closes,
#: and for how long (see ``_Handler._linger``).
_LINGER_BYTES = 64 << 20
_LINGER_SECONDS = 5.0


class HttpServer:
    """A running file server; stop it with :meth:`close` (or a ``with`` block).

    Example::

        with Engine.open("./data", functions=app) as db, db.serve_http("127.0.0.1", 0) as server:
            print(server.url)    # http://127.0.0.1:43817, the origin of file URLs now

    ``url`` is the origin it serves (the port resolved when 0 was asked); for a server
    on every interface (``"0.0.0.0"``, ``"::"``) it names the loopback address, which
    only this machine can reach: give ``Engine.open(site_url=...)`` the address other
    machines use, or file URLs will not work for them.
    ``timeout``: seconds any socket read or write may wait before the
    connection is dropped (default :data:`DEFAULT_TIMEOUT`, 120).
    ``max_connections``: connections served at once, one thread each
    (default :data:`DEFAULT_MAX_CONNECTIONS`); more are answered 503.
    ``max_upload_size``: bytes an upload may have (default
    :data:`DEFAULT_MAX_UPLOAD_SIZE`, 256 MiB; it is held in memory); larger get 413.
    An HTTP action's request body is capped at Convex's 20 MiB, or at
    ``max_upload_size`` if that is smaller.
    """

    def __init__(
        self,
        runtime: Runtime,
        host: str,
        port: int,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_upload_size: int = DEFAULT_MAX_UPLOAD_SIZE,
    ) -> None:
        self._runtime = runtime
        handler = type(
            "_BoundHandler",
            (_Handler,),
            {"runtime": runtime, "timeout": timeout, "max_upload_size": max_upload_size},
        )
        try:
            self._server = ConnectionServer((host, port), handler, max_connections)
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                raise  # as raised (socket.gaierror for a host that does not resolve, ...)
            # "[Errno 98] Address already in use" said neither which address nor what
            # to do; the errno stays, for callers that test it.
            raise OSError(
                error.errno,
                f"serve_http cannot listen on {host}:{port}: {error.strerror}: another "
                "server listens there (pass port=0 for a free port)",
            ) from error
        address = self._server.server_address
        bound_host = address[0].decode() if isinstance(address[0], bytes) else str(address[0])
        bound_port = address[1]
        # A wildcard address listens on every interface but is no address to send a
        # request to (browsers refuse 0.0.0.0): URLs name the loopback one instead.
        shown = _LOOPBACK.get(bound_host, bound_host)
        shown = f"[{shown}]" if ":" in shown else shown
        self.host = bound_host
        self.port = int(bound_port)
        self.url = f"http://{shown}:{self.port}"
        self._thread = threading.Thread(
            # A short poll: close() waits up to one interval for the loop to notice.
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name=f"convexlite-http-{self.port}",
            daemon=True,
        )
        self._thread.start()
        self._closed = False

    def close(self) -> None:
        """Stop serving, free the port and end the open connections. Idempotent.

        Idle kept-alive connections are shut down at once (a client can make no
        request after this). A request in flight gets up to 5 s to finish and send
        its answer (with ``Connection: close``); one still running then (a slow
        download, a long handler) is cut short: the client sees fewer bytes than
        Content-Length, or no answer. Cost: up to 6 s with a request in flight.
        """
        if self._closed:
            return
        self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self._server.close_connections(wait=_GRACE)
        runtime = self._runtime
        with runtime.serving_lock:
            if self.url in runtime.serving:
                runtime.serving.remove(self.url)
            moved = runtime.served_url == self.url
            if moved:  # the next running server's origin, if any
                runtime.served_url = runtime.serving[0] if runtime.serving else None
        if moved and runtime.site_url is None:  # subscribed file URLs follow the new origin
            runtime.db.subscriptions.rerun_all()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has begun."""
        return self._closed

    def __enter__(self) -> HttpServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: What URLs name for a server bound to a wildcard address.
_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1"}


class _Handler(BaseHTTPRequestHandler):
    """The ``http.server`` front end of :func:`handle`."""

    runtime: Runtime
    max_upload_size: int
    raw_requestline: bytes  # set by handle_one_request before parse_request
    #: The request asked ``Expect: 100-continue`` and has not been sent the 100 yet.
    continue_pending = False
    protocol_version = "HTTP/1.1"
    server_version = "convexlite"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # an embedded server does not write to stderr; the host logs if it wants

    def handle(self) -> None:
        """Serve the connection's requests. Until a request starts arriving the
        connection is idle: close() ends it at once, and a new connection may close
        it to take its slot (see :class:`~engine.httpconnections.ConnectionServer`). Between two requests it waits at
        most :data:`KEEP_ALIVE_TIMEOUT` for the next; for the first, ``timeout``."""
        self.close_connection = True
        first = True
        while self._next_request(first):
            first = False
            self.handle_one_request()
            if self.close_connection:
                return

    def _next_request(self, first: bool) -> bool:
        """Whether a request starts arriving on this connection in time."""
        server: ConnectionServer = self.server  # type: ignore[assignment]
        connection = self.connection
        wait = (
            self.timeout if first else min(KEEP_ALIVE_TIMEOUT, self.timeout or KEEP_ALIVE_TIMEOUT)
        )
        # A first request already in the socket: the connection is never idle, so a new
        # client cannot close it to take its slot (between mark_idle and the peek below
        # it could, and the request went unanswered). Later requests may be buffered in
        # rfile, where the socket's peek does not look: for those the window stays, as for
        # any kept-alive connection closed by a server while a request is on its way.
        waiting = first and bytes_waiting(connection)
        if not waiting and not server.mark_idle(connection):  # the server is closing
            if not first:
                return False
            wait = _CLOSING_PEEK  # a request already sent is answered 503 ServerClosing
        arrived = False
        try:
            connection.settimeout(wait)
            # At once if pipelined bytes are buffered (rfile is a BufferedReader).
            arrived = bool(self.rfile.peek(1))  # type: ignore[attr-defined]
        except OSError:  # idle past the keep-alive timeout, or closed to make room
            arrived = False
        finally:
            kept = server.mark_busy(connection)
        if not (arrived and kept):
            return False
        connection.settimeout(self.timeout)
        return True

    def parse_request(self) -> bool:
        """Read the request's head (after ``raw_requestline``), strictly: see
        :mod:`engine.httphead`. False, with the refusal sent, if it is not served."""
        self.command = ""  # a refusal is not a HEAD answer: it has its body
        self.continue_pending = False
        self.request_version = self.protocol_version  # a refusal has a status line
        self.close_connection = True
        head = _read_head(self.raw_requestline, self.rfile.readline)
        if head is None:  # the client closed the connection
            return False
        if isinstance(head, Response):  # what follows is not a request to serve
            self._send(head)
            self._linger()
            return False
        self.command, self.path, self.request_version, self.headers = head
        self.requestline = f"{head.method} {head.target} {head.version}"
        connection = {
            token.strip().lower() for token in self.headers.get("Connection", "").split(",")
        }
        self.close_connection = "close" in connection or (
            head.version == "HTTP/1.0" and "keep-alive" not in connection
        )
        # The interim 100 goes out when the body is first read (``_serve``'s read_body),
        # not now: a request refused on its head (413, 401, 404) is answered at once,
        # and the client need not send a body nobody reads (RFC 9110 10.1.1).
        self.continue_pending = (
            self.headers.get("Expect", "").lower() == "100-continue" and head.version != "HTTP/1.0"
        )
        return True

    def _serve(self) -> None:
        if self.server.closing:  # type: ignore[attr-defined]
            self.close_connection = True
            self.wfile.write(CLOSING)
            return
        consumed = False
        whole = True  # False while a chunked body is read in part

        def read_body(n: int) -> bytes:
            nonlocal consumed
            consumed = True
            if self.continue_pending:  # the client waits for it before sending the body
                self.continue_pending = False
                self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            return self.rfile.read(n)

        read_all = None
        if self._chunked():

            def read_all(max_size: int) -> bytes | Response | None:
                nonlocal whole
                whole = False
                read_body(0)  # the 100 Continue, if the client waits for one
                data = _read_chunked(self.rfile.readline, read_body, max_size)
                whole = isinstance(data, bytes)
                return data

        # The request line's own target (parse_request keeps it: http.server folded a
        # leading "//" into "/", which routed "//notes" to "/notes" here but not behind
        # wsgi_app, Engine.fetch or Convex, whose URL pathname keeps "//notes"), its bytes
        # outside URL syntax escaped as a WHATWG URL parser (Convex's) escapes them.
        target = escape_raw_path(self.path.encode("latin-1"))
        host = self.headers.get("Host")
        authority = host
        refusal = None
        if not target.startswith("/"):  # absolute-form: "GET http://host/path HTTP/1.1"
            absolute = _absolute_form(target)
            if absolute is None:
                refusal = _error(
                    400,
                    "BadRequest",
                    f"The request target {target[:100]!r} is neither a path nor an http or "
                    "https URL whose authority is a host[:port] (RFC 9112 section 3.2).",
                )
            else:
                authority, target = absolute
        if authority is None:  # HTTP/1.0 may send none: the address served (IPv6 bracketed)
            address: Any = self.server.server_address
            bound = str(address[0])
            authority = f"[{bound}]:{address[1]}" if ":" in bound else f"{bound}:{address[1]}"
        url = f"{_forwarded_scheme(self.headers)}://{authority}{target}"
        refusal = refusal or _refuse_framing(self.headers)
        if refusal is None and len(self.headers.get_all("Host") or ()) > 1:
            # RFC 9112 3.2: a proxy in front may have checked another Host than ours.
            refusal = _error(
                400, "BadRequest", "The request has several Host headers: send one (RFC 9112)."
            )
        if refusal is None and host is not None and not _valid_host(host):
            refusal = _error(400, "BadRequest", f"The Host header {host!r} is not a host[:port].")
        if refusal is not None:
            self.close_connection = True  # where the next request starts is unknown
            response = refusal
        else:
            response = handle(
                self.runtime,
                self.command,
                target,
                self.headers.get,
                read_body,
                self.max_upload_size,
                headers=self.headers.items,
                url=url,
                read_all=read_all,
            )
        if consumed and (response.status == 400 or not whole):
            self.close_connection = True  # the body may be partly unread
        # A body left unread must be dropped for the next request to be found: one of an
        # unknown length, or too long to read for nothing, closes the connection, which
        # the answer then says (decided before its headers are sent).
        drop = 0 if consumed else self._droppable_body()
        if drop != 0 and self.continue_pending:
            # Told no 100, the client may send the body or not: what comes next on the
            # connection is unknown, so it closes (after lingering for a body under way).
            drop = None
        if drop is None:
            self.close_connection = True
        self._send(response)
        if not response.complete:
            self.close_connection = True
        # Dropped after the answer, so a client that never sends the body it announced
        # still gets one.
        if drop != 0 and not self.close_connection:
            self.close_connection = drop is None or not self._drop(drop)
        if drop != 0 and self.close_connection:
            self._linger()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's own refusals, in JSON as every other answer here: a
        request line over 64 KiB (414) and a method without a handler (501)."""
        self.close_connection = True  # the rest of the request is unread
        if code == 414:
            response = _error(
                414,
                "UriTooLong",
                "The request line is longer than 65536 bytes: send long data in the body.",
            )
        elif code == 501:
            response = _error(
                501,
                "NotImplemented",
                f"The method {self.command[:100]!r} is not supported: the server answers "
                "GET, HEAD, POST, PUT, DELETE, PATCH and OPTIONS.",
            )
        else:  # not called by http.server otherwise since parse_request is ours
            status = HTTPStatus(code)
            response = _error(
                status.value, status.phrase.replace(" ", ""), message or status.phrase
            )
        self._send(response)
        self._linger()

    def _send(self, response: Response) -> None:
        """Send ``response``, with ``Connection: close`` if the connection closes after it."""
        # send_response() adds Server and Date even when the handler gave its own: two
        # Date headers (a singleton field). Added here only when the answer has none.
        self.send_response_only(response.status)
        given = {name.lower() for name, _ in response.headers}
        if "server" not in given:
            self.send_header("Server", self.version_string())
        if "date" not in given:
            self.send_header("Date", self.date_time_string())
        for name, value in response.headers:
            self.send_header(name, value)
        if self.close_connection or self.server.closing:  # type: ignore[attr-defined]
            self.send_header("Connection", "close")  # sets close_connection too
        self.end_headers()
        if self.command != "HEAD":
            for part in response.body:
                self.wfile.write(part)

    def _linger(self) -> None:
        """Before closing with a request body unread (a 413, say): stop sending, then
        read and drop what the client still sends until it closes, up to
        ``_LINGER_BYTES`` for up to ``_LINGER_SECONDS``. A client that is still sending
        when the socket closes gets a reset, not the answer already sent (RFC 9112 §9.6:
        close in stages); most clients read only once they have sent."""
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)  # the client reads the answer to its end
            self.connection.settimeout(1.0)
            deadline = time.monotonic() + _LINGER_SECONDS
            left = _LINGER_BYTES
            while left > 0 and time.monotonic() < deadline:
                part = self.rfile.read1(min(left, _PIECE))
                if not part:
                    return
                left -= len(part)
        except OSError:  # the client stalled or went away: close now
            return

    def _chunked(self) -> bool:
        """Whether the request's body is chunked coding alone, which is decoded (RFC 9112
        6.1: HTTP/1.0 has none, and other codings are not taken: 411 and the
        connection closes)."""
        codings = self.headers.get_all("Transfer-Encoding") or []
        return (
            self.request_version == "HTTP/1.1"
            and len(codings) == 1
            and codings[0].strip().lower() == "chunked"
            and self.headers.get("Content-Length") is None
        )

    def _droppable_body(self) -> int | None:
        """The length of the request body if it is short enough to read and drop (up to
        1 MiB) to keep the connection, else None (its length is unknown, bad, or larger)."""
        length = self.headers.get("Content-Length")
        if length is None:
            return 0 if self.headers.get("Transfer-Encoding") is None else None
        size = _content_length(length)
        return size if size is not None and size <= _PIECE else None

    def _drop(self, size: int) -> bool:
        """Read and drop an unused request body of ``size`` bytes; False if it could not be."""
        try:
            return len(self.rfile.read(size)) == size
        except OSError:  # the client stalled past the timeout
            return False

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _serve
