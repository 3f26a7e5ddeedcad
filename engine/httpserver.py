"""The HTTP front ends: file storage's endpoints and HTTP actions, on the standard library.

Two front ends share one request handler (:func:`handle`):
``Engine.serve_http(host, port)`` runs an :class:`HttpServer` (``http.server``)
on a daemon thread, and ``Engine.wsgi_app()`` returns a :class:`WsgiApp` a host
mounts in its own web server. Paths under ``/api/storage/`` are the storage
endpoints'; every other path belongs to the engine's HTTP actions when it has a
router (see :mod:`engine.router` and :mod:`engine.httpactions`: a request is read
in full, its ``Content-Length`` at most 20 MiB (Convex's limit) or a smaller
``max_upload_size``, then its action runs
on an event loop of the request's thread), else is answered 404. Convex serves
files and HTTP actions on different origins; here they share one, so routes may
not be defined under ``/api/storage``. The storage endpoints are Convex's two:

- ``GET <origin>/api/storage/<storage id>-<signature>`` (a URL from
  ``ctx.storage.get_url``): the file's bytes with its ``Content-Type``,
  ``Content-Length`` and ``Digest: sha-256=<base64>``, and ``Content-Security-Policy:
  sandbox`` (a file opened as a page runs no script on this origin, which is also the
  HTTP actions'); 404 once the file is
  deleted or for a URL this database did not sign. ``HEAD`` as well. Convex's
  ``Cache-Control: private, max-age=2592000``, an ``ETag`` (``304`` for an
  ``If-None-Match`` naming it). One byte
  range (``Range: bytes=...``) gets ``206`` with ``Content-Range``; several, or one
  past the end, ``416``, as in Convex.
- ``POST <origin>/api/storage/upload?token=...`` (a URL from
  ``ctx.storage.generate_upload_url``, valid one hour): stores the request
  body as a new file, with the request's ``Content-Type``; an optional
  ``Digest: sha-256=<base64>`` header is checked. Answers
  ``{"storageId": "..."}``. The body needs a ``Content-Length``.

Every storage answer allows any origin (``Access-Control-Allow-Origin: *``) and
``OPTIONS`` answers CORS preflights, so a browser page on another origin can
upload and download, as with Convex (for HTTP actions, CORS is the app's job, as
in Convex). The engine's own errors are JSON ``{"code": ..., "message": ...}``.

A download reads the file chunk by chunk, each chunk in a short read txn of
its own (a slow client does not pin a snapshot); an upload is read in 1 MiB
pieces and held in memory until it is stored.

Limits of :class:`HttpServer` (arguments of ``Engine.serve_http``):
``timeout`` (default :data:`DEFAULT_TIMEOUT`, 120 s, Convex's request
timeout) bounds every socket read and write, so a client that stalls
(headers never finished, a body never sent, a download never read) is
disconnected instead of holding its thread forever (it does not bound how long an
HTTP action's handler runs); ``max_connections``
(default :data:`DEFAULT_MAX_CONNECTIONS`) caps the connections served at
once: one more is answered ``503`` and closed, unless a kept-alive connection is idle
(it is then closed to make room). An idle kept-alive connection is closed after
:data:`KEEP_ALIVE_TIMEOUT` (5 s).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlsplit
from wsgiref.util import is_hop_by_hop, request_uri

from . import blobs, files, httpactions
from .errors import EngineError, InvalidId, ValidationError
from .httpmessages import HttpRequest, escape_raw_path, normalize_path

if TYPE_CHECKING:
    from .functions import Runtime
    from .router import HttpRouter

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

_log = logging.getLogger(__name__)
_PREFIX = "/api/storage/"
_UPLOAD = "/api/storage/upload"
#: Seconds a socket read or write may wait before the connection is dropped
#: (Convex's request timeout: 2 minutes).
DEFAULT_TIMEOUT = 120.0
#: Connections an :class:`HttpServer` serves at once (one thread each).
DEFAULT_MAX_CONNECTIONS = 64
#: Seconds a kept-alive connection may wait idle for its next request before it is
#: closed (Node's and uvicorn's 5 s); never more than the server's ``timeout``.
KEEP_ALIVE_TIMEOUT = 5.0
#: Seconds a new connection waits for the slot of an idle one closed to make room.
_EVICTION_WAIT = 1.0
#: Seconds ``HttpServer.close`` lets requests in flight finish (and answer), and then
#: waits for the threads of those it had to cut short.
_GRACE = 5.0
_SHUTDOWN_WAIT = 1.0
#: Seconds a connection accepted as the server closes waits for its first request.
_CLOSING_PEEK = 0.2
#: Bytes an upload may have (it is held in memory until stored): larger ones get 413.
DEFAULT_MAX_UPLOAD_SIZE = 256 << 20
#: How much of a refused request body is read and dropped before the connection closes,
#: and for how long (see ``_Handler._linger``).
_LINGER_BYTES = 64 << 20
_LINGER_SECONDS = 5.0
_PIECE = 1 << 20  # upload bodies are read this many bytes at a time
#: Characters a path keeps unescaped (RFC 3986 pchar and "/", besides letters and digits).
_PATH_SAFE = "/:@!$&'()*+,;=~"


def _raw_error(code: str, message: str) -> bytes:
    """A whole ``503`` answer that closes the connection, written straight to a socket."""
    body = json.dumps({"code": code, "message": message}).encode()
    return (
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        b"Access-Control-Allow-Origin: *\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )


_BUSY = _raw_error("TooManyConnections", "Too many connections, retry later")
_CLOSING = _raw_error("ServerClosing", "The server is closing")


def _shut(connection: socket.socket) -> None:
    try:
        connection.shutdown(socket.SHUT_RDWR)  # its thread's next read or write fails
    except OSError:
        pass


class _Server(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` with a cap on the connections served at once, which
    tracks them so that :meth:`close_connections` can end the kept-alive ones.

    A connection waiting for a request to start arriving (its next on a kept-alive
    connection, or its first: browsers open connections ahead of need) is *idle*: when
    every slot is taken, a new connection closes the longest idle one and takes its slot
    (as nginx reuses idle keep-alive connections), so idle clients never lock others
    out, and closing the server ends idle connections at once."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: Any, max_connections: int) -> None:
        # The listen backlog (socketserver's default is 5: a burst of connections got
        # resets before the accept loop could answer them, even a 503).
        self.request_queue_size = max(128, max_connections)
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(max_connections)
        self._connections: set[socket.socket] = set()
        self._idle: dict[socket.socket, None] = {}  # oldest first
        self._evicted: set[socket.socket] = set()
        self._changed = threading.Condition()
        self.closing = False

    def mark_idle(self, connection: socket.socket) -> bool:
        """``connection`` now waits for its next request; False if it should close."""
        with self._changed:
            if self.closing:
                return False
            self._idle[connection] = None
            return True

    def mark_busy(self, connection: socket.socket) -> bool:
        """``connection`` has a request to serve; False if it was closed to make room."""
        with self._changed:
            self._idle.pop(connection, None)
            if connection in self._evicted:
                self._evicted.discard(connection)
                return False
            return True

    def _evict_idle(self) -> bool:
        """Shut down the longest idle kept-alive connection; False if none is idle."""
        with self._changed:
            if not self._idle:
                return False
            connection = next(iter(self._idle))
            del self._idle[connection]
            self._evicted.add(connection)
            _shut(connection)
            return True

    def _take_slot(self) -> bool:
        if self._slots.acquire(blocking=False):
            return True
        while self._evict_idle():
            if self._slots.acquire(timeout=_EVICTION_WAIT):
                return True
        return False

    def process_request(self, request: Any, client_address: Any) -> None:
        if self.closing or not self._take_slot():
            try:  # a fresh socket's send buffer takes this without blocking
                request.sendall(_CLOSING if self.closing else _BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        with self._changed:
            self._connections.add(request)
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._forget(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._forget(request)

    def _forget(self, request: Any) -> None:
        with self._changed:
            self._connections.discard(request)
            self._idle.pop(request, None)
            self._evicted.discard(request)
            self._changed.notify_all()
        self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A request failed: silent when the client went away (it aborted, or stalled past
        the timeout, or the server is closing), else logged to ``engine.httpserver``,
        never printed to stderr."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError | TimeoutError) or (
            self.closing and isinstance(error, OSError)
        ):
            return
        _log.error("Error serving a request from %s", client_address, exc_info=True)

    def close_connections(self, wait: float) -> None:
        """End every open connection: the idle kept-alive ones at once, the others once
        they have answered the request in hand (``Connection: close``), or after
        ``wait`` seconds, whichever comes first; then wait a moment for their threads."""
        with self._changed:
            self.closing = True
            for connection in list(self._idle):
                _shut(connection)
            self._changed.wait_for(lambda: not self._connections, timeout=wait)
            for connection in list(self._connections):  # still busy after the grace period
                _shut(connection)
            self._changed.wait_for(lambda: not self._connections, timeout=_SHUTDOWN_WAIT)


class HttpServer:
    """A running file server; stop it with :meth:`close` (or a ``with`` block).

    Example::

        with Engine.open("./data", functions=app) as db, db.serve_http("127.0.0.1", 0) as server:
            print(server.url)    # http://127.0.0.1:43817, the origin of file URLs now

    ``url`` is the origin it serves (the port resolved when 0 was asked).
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
        self._server = _Server((host, port), handler, max_connections)
        address = self._server.server_address
        bound_host = address[0].decode() if isinstance(address[0], bytes) else str(address[0])
        bound_port = address[1]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
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
        if self.url in runtime.serving:
            runtime.serving.remove(self.url)
        if runtime.served_url == self.url:  # the next running server's origin, if any
            runtime.served_url = runtime.serving[0] if runtime.serving else None

    def __enter__(self) -> HttpServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Response:
    """What :func:`handle` answers: a status, headers, and the body as an iterable of bytes.

    ``complete`` turns False when a download stopped short (the file was deleted
    while being sent): the front end then closes the connection.
    """

    __slots__ = ("body", "complete", "headers", "status")

    def __init__(
        self, status: int, headers: list[tuple[str, str]], body: Iterable[bytes] = ()
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.complete = True


_CORS = ("Access-Control-Allow-Origin", "*")


_HEADER_LIST = re.compile(
    r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+(?:[ \t]*,[ \t]*[!#$%&'*+\-.^_`|~0-9A-Za-z]+)*"
)


def _allowed_headers(header: Callable[[str], str | None]) -> str:
    """A preflight's ``Access-Control-Allow-Headers``: the headers it asks for, as
    Convex's CORS layer mirrors them (a browser upload may add its own), when they are
    a list of header names; else the endpoints' own."""
    asked = (header("Access-Control-Request-Headers") or "").strip()
    return asked if _HEADER_LIST.fullmatch(asked) else "Content-Type, Digest"


def _json(status: int, body: dict[str, Any]) -> Response:
    data = json.dumps(body).encode()
    return Response(
        status,
        [_CORS, ("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
        [data],
    )


def _error(status: int, code: str, message: str) -> Response:
    return _json(status, {"code": code, "message": message})


def handle(
    runtime: Runtime,
    method: str,
    target: str,
    header: Callable[[str], str | None],
    read_body: Callable[[int], bytes],
    max_upload_size: int = DEFAULT_MAX_UPLOAD_SIZE,
    *,
    headers: Callable[[], list[tuple[str, str]]] | None = None,
    url: str | None = None,
) -> Response:
    """Answer one request, to the storage endpoints or an HTTP action, whatever server
    carries it.

    ``target`` is the path (after any mount point) with its query string;
    ``header(name)`` returns a request header or None; ``read_body(n)`` reads
    ``n`` bytes of the request body (only called for an upload with a valid
    token, or a request an HTTP action will answer). ``headers()`` returns every
    request header and ``url`` is the request's absolute URL, both for HTTP actions
    (defaults: none, and the engine's origin followed by ``target``).

    Paths under ``/api/storage/`` are the storage endpoints'; every other path goes to
    the HTTP actions' router when the engine has one (``Engine.open(http=...)`` or the
    functions package's ``http`` module), else is answered 404. Cost: a download reads
    one chunk per read txn as the body is iterated; an upload holds the body in memory,
    then stores it in one commit; an HTTP action reads its body in full, then runs on
    an event loop of its own (this thread's).
    """
    if target.startswith("/"):
        # Origin-form: a path and a query, never an authority (urlsplit would read
        # "//admin/secret" as host "admin" and path "/secret").
        path, _, query = target.partition("#")[0].partition("?")
    else:
        try:
            split = urlsplit(target)
        except ValueError:  # "http://[x": an unparsable authority
            return _error(400, "BadRequest", "The request target is not a valid URL path.")
        path, query = split.path, split.query
    # "/x/../api/storage/..." is a storage path: routed as a WHATWG URL parser reads it.
    path = normalize_path(path)
    router = runtime.registry.http
    if router is not None and not (path == _PREFIX[:-1] or path.startswith(_PREFIX)):
        return _http_action(
            runtime,
            router,
            method,
            target,
            path,
            header,
            read_body,
            max_upload_size,
            headers,
            url,
        )
    if method == "OPTIONS":
        return Response(
            204,
            [
                _CORS,
                ("Access-Control-Allow-Methods", "GET, HEAD, POST, OPTIONS"),
                ("Access-Control-Allow-Headers", _allowed_headers(header)),
                ("Access-Control-Max-Age", "86400"),
                ("Content-Length", "0"),
            ],
        )
    try:
        if method in ("GET", "HEAD") and path.startswith(_PREFIX) and path != _UPLOAD:
            return _download(
                runtime,
                path[len(_PREFIX) :],
                head=method == "HEAD",
                byte_range=header("Range"),
                if_range=header("If-Range"),
                if_none_match=header("If-None-Match"),
            )
        if method == "POST" and path == _UPLOAD:
            return _upload(runtime, query, header, read_body, max_upload_size)
    except EngineError as error:  # the engine closed, the disk failed, ...
        return _failed(runtime.db, error)
    if path.startswith(_PREFIX):  # an endpoint that exists, for other methods
        allowed = "POST, OPTIONS" if path == _UPLOAD else "GET, HEAD, OPTIONS"
        response = _error(
            405, "MethodNotAllowed", f"{method} is not allowed on {path}: use {allowed}."
        )
        response.headers.append(("Allow", allowed))
        return response
    return _error(404, "NotFound", f"No route for {method} {path}")


def _download(
    runtime: Runtime,
    segment: str,
    *,
    head: bool,
    byte_range: str | None = None,
    if_range: str | None = None,
    if_none_match: str | None = None,
) -> Response:
    db = runtime.db
    storage_id = files.parse_file_url_path(db, segment)
    found = None
    if storage_id is not None:
        try:
            found = files.metadata_and_key(db, storage_id)
        except InvalidId:
            found = None
        except EngineError as error:
            return _failed(db, error)
    if found is None:
        return _error(404, "FileNotFound", "File not found")
    document, doc_key = found
    size = int(document["size"])
    etag = f'"{document["sha256"]}"'
    if if_none_match is not None and _matches(if_none_match, etag):  # before Range
        return Response(304, [_CORS, ("ETag", etag), _CACHE_CONTROL])
    span = None
    if byte_range is not None and (if_range is None or if_range.strip() == etag):
        span = _byte_range(byte_range, size)
    if span == "unsatisfiable":
        return Response(416, [_CORS, ("Content-Range", f"bytes */{size}"), ("Content-Length", "0")])
    if isinstance(span, tuple):
        start, end = span
        headers = [
            _CORS,
            ("Content-Type", _content_type(document)),
            ("Content-Range", f"bytes {start}-{end}/{size}"),
            ("Content-Length", str(end - start + 1)),
            ("Accept-Ranges", "bytes"),
            ("ETag", etag),
            _CACHE_CONTROL,
            *_sandbox(document),
        ]
        response = Response(206, headers)
        if not head:
            response.body = _chunks(db.storage, doc_key, size, response, start, end + 1)
        return response
    headers = [
        _CORS,
        ("Content-Type", _content_type(document)),
        ("Content-Length", str(size)),
        ("Accept-Ranges", "bytes"),
        ("Digest", f"sha-256={document['sha256']}"),
        ("ETag", etag),
        _CACHE_CONTROL,
        # Files share this origin with the HTTP actions (Convex serves them on another),
        # and an uploader picks the Content-Type: a file opened as a page gets an opaque
        # origin and runs no script, so an uploaded HTML or SVG file cannot act as the
        # app. <img>, <video>, <audio> and downloads are unaffected.
        *_sandbox(document),
    ]
    response = Response(200, headers)
    if not head:
        response.body = _chunks(db.storage, doc_key, size, response)
    return response


_NOSNIFF = ("X-Content-Type-Options", "nosniff")
#: Convex's (local_backend/storage.rs): a file URL's bytes never change, and only the
#: browser that fetched them keeps them.
_CACHE_CONTROL = ("Cache-Control", "private, max-age=2592000")


def _matches(if_none_match: str, etag: str) -> bool:
    """Whether an ``If-None-Match`` list names ``etag`` (weak comparison) or is ``*``."""
    if if_none_match.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in if_none_match.split(","))


def _sandbox(document: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """``Content-Security-Policy: sandbox`` and ``nosniff`` for a download, but for a PDF
    only ``nosniff``: browsers' PDF viewers do not run in a sandboxed document, and their
    scripts never run on the page's origin anyway."""
    media_type = _content_type(document).partition(";")[0].strip().lower()
    if media_type == "application/pdf":
        return (_NOSNIFF,)
    return (("Content-Security-Policy", "sandbox"), _NOSNIFF)


_RANGE = re.compile(r"bytes=(?:([0-9]{1,18})-([0-9]{0,18})|-([0-9]{1,18}))")


def _byte_range(value: str, size: int) -> tuple[int, int] | str | None:
    """The ``(first, last)`` bytes a ``Range`` header asks of a ``size``-byte file;
    ``"unsatisfiable"`` (416) for a range past the end or several ranges (Convex serves
    one, as S3 does); None for a header that is no byte range (the whole file, 200)."""
    specs = value.strip().removeprefix("bytes=").split(",")
    if len(specs) > 1 and value.strip().startswith("bytes="):
        if all(_RANGE.fullmatch("bytes=" + spec.strip()) for spec in specs):
            return "unsatisfiable"
        return None
    match = _RANGE.fullmatch(value.strip())
    if match is None:
        return None
    first, last, suffix = match.groups()
    if suffix is not None:
        length = int(suffix)
        if length == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - length), size - 1
    start = int(first)
    end = size - 1 if not last else int(last)
    if last and end < start:
        return None  # "bytes=9-5" is not a valid range: ignored (RFC 9110 14.1.1)
    if start >= size:
        return "unsatisfiable"
    return start, min(end, size - 1)


def _content_type(document: dict[str, Any]) -> str:
    """The row's content type, if a header can carry it (rows stored before store_file
    required visible ASCII may hold others), else ``application/octet-stream``."""
    value = document.get("contentType")
    if isinstance(value, str) and value.isascii() and value.isprintable():
        return value
    return "application/octet-stream"


def _chunks(
    storage: Any,
    doc_key: bytes,
    size: int,
    response: Response,
    start: int = 0,
    stop: int | None = None,
) -> Iterator[bytes]:
    """The file's bytes ``[start, stop)`` (all by default), one chunk per read txn."""
    stop = size if stop is None else stop
    first = start // blobs.CHUNK_SIZE
    last = max(first + 1, -(-stop // blobs.CHUNK_SIZE))
    for number in range(first, last):
        try:
            with storage.read() as rtxn:  # one short txn per chunk: a slow client pins nothing
                chunk = rtxn.get(blobs.chunk_key(doc_key, number), db=storage.blobs)
        except EngineError:  # the engine closed mid-download
            chunk = None
        if chunk is None:  # deleted while being sent: cut the response short
            response.complete = False
            return
        offset = number * blobs.CHUNK_SIZE
        if offset < start or offset + len(chunk) > stop:  # the ends of a range
            chunk = chunk[max(0, start - offset) : stop - offset]
        yield chunk


def _upload(
    runtime: Runtime,
    query: str,
    header: Callable[[str], str | None],
    read_body: Callable[[int], bytes],
    max_upload_size: int,
) -> Response:
    db = runtime.db
    token = parse_qs(query).get("token", [""])[0]
    why = files.check_upload_token(db, token) if token else "the upload URL has no token"
    if why is not None:
        return _error(401, "InvalidUploadToken", f"Invalid upload URL: {why}.")
    data = _body(header, read_body, max_upload_size, "An upload")
    if isinstance(data, Response):
        return data
    try:
        storage_id = files.store_file(
            db, data, header("Content-Type") or None, sha256=_digest_header(header("Digest"))
        )
    except ValidationError as error:
        code = "Sha256Mismatch" if "Sha256" in str(error) else "BadRequest"
        return _error(400, code, str(error))
    except EngineError as error:  # the storage failed (disk full, engine closed, ...)
        return _failed(db, error)
    return _json(200, {"storageId": storage_id})


def _body(
    header: Callable[[str], str | None],
    read_body: Callable[[int], bytes],
    max_size: int,
    what: str,
    *,
    optional: bool = False,
) -> bytes | Response:
    """The request body, or the error answer: 411 without ``Content-Length`` (unless
    ``optional`` and the request announces no body at all), 400 for a bad length or a
    body that ends early, 413 above ``max_size``."""
    value = header("Content-Length")
    if value is None:
        if optional and header("Transfer-Encoding") is None:
            return b""
        return _error(411, "LengthRequired", f"{what} needs a Content-Length header.")
    length = _content_length(value)
    if length is None:
        return _error(
            400, "BadContentLength", f"Content-Length must be a number of bytes, got {value!r}."
        )
    if length > max_size:
        return _error(413, "PayloadTooLarge", _too_large(length, max_size, what))
    data = _read_all(read_body, length)
    if data is None:
        return _error(400, "IncompleteBody", f"{what} ended before Content-Length bytes.")
    return data


def _too_large(length: int, max_size: int, what: str) -> str:
    """The 413 message for a body of ``length`` bytes over ``max_size``: Convex's
    20 MiB limit when that is the cap (an HTTP action's body), else the server's."""
    if what == "The request body" and max_size == httpactions.BODY_LIMIT:
        return httpactions.too_large(length)
    return (
        f"{what} has {length} bytes; this server takes at most {max_size} "
        "(serve_http(max_upload_size=...))."
    )


def _http_action(
    runtime: Runtime,
    router: HttpRouter,
    method: str,
    target: str,
    path: str,
    header: Callable[[str], str | None],
    read_body: Callable[[int], bytes],
    max_size: int,
    headers: Callable[[], list[tuple[str, str]]] | None,
    url: str | None,
) -> Response:
    """Answer a request with the HTTP action its route names (see :mod:`engine.httpactions`)."""
    body = b""
    if method not in ("GET", "HEAD", "OPTIONS"):  # Convex hands these no body
        cap = min(max_size, httpactions.BODY_LIMIT)
        data = _body(header, read_body, cap, "The request body", optional=True)
        if isinstance(data, Response):
            return data
        body = data
    if url is None:
        url = files.origin(runtime) + (target if target.startswith("/") else "/" + target)
    try:
        request = HttpRequest(
            method, url, headers=headers() if headers is not None else None, body=body, path=path
        )
    except (EngineError, ValueError) as error:  # a control character, a bad Host
        return _error(400, "BadRequest", str(error))
    answer = httpactions.finish(
        asyncio.run(httpactions.respond(runtime, router, request)), head=method == "HEAD"
    )
    return Response(answer.status, answer.headers.pairs(), [answer.body])


def _failed(db: Any, error: EngineError) -> Response:
    """503 when the engine is closed, else 500: the storage failed (disk full, ...)."""
    if db.storage.closed:
        return _error(503, "EngineClosed", "The database is closed.")
    return _error(500, "StorageFailed", f"The storage failed: {error}")


def _content_length(value: str) -> int | None:
    """A ``Content-Length`` header's value: ASCII digits only (``int`` would take
    ``"\\xb2"`` or ``" 1_0 "``), else None; an absurd length comes back as 2**62."""
    if not (value.isascii() and value.isdigit()):
        return None
    return int(value) if len(value.lstrip("0")) <= 18 else 1 << 62


def _read_all(read_body: Callable[[int], bytes], length: int) -> bytes | None:
    """``length`` bytes of body, read in pieces (a declared length is never allocated
    up front); None if the body ends, or its socket fails or times out, before."""
    parts: list[bytes] = []
    left = length
    while left > 0:
        try:
            part = read_body(min(left, _PIECE))
        except OSError:  # TimeoutError included: the client stalled
            return None
        if not part:
            return None
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


_HOST = re.compile(r"(?:[A-Za-z0-9._~!$&'()*+,;=%-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


def _valid_host(host: str) -> bool:
    """Whether a ``Host`` header is a host and optional port (RFC 9110 §7.2): nothing
    that would move the path or query of the URL an HTTP action sees."""
    return _HOST.fullmatch(host) is not None


def _forwarded_scheme(headers: Any) -> str:
    """The scheme of ``request.url``: a TLS-terminating proxy's ``X-Forwarded-Proto``,
    else the ``proto=`` of the first ``Forwarded`` element, else ``http`` (Convex's
    rule, local_backend/http_actions.rs); only ``http`` or ``https`` is taken."""
    value = headers.get("X-Forwarded-Proto")
    if value is None:
        first = (headers.get("Forwarded") or "").split(",")[0]
        for pair in first.split(";"):
            key, _, proto = pair.partition("=")
            if key.strip().lower() == "proto":
                value = proto.strip().strip('"')
                break
    scheme = (value or "").split(",")[0].strip().lower()  # the first proxy's, if several
    return scheme if scheme in ("http", "https") else "http"


def _refuse_framing(headers: Any) -> Response | None:
    """400 for a request whose body length is ambiguous (RFC 9112 §6.3): both
    ``Transfer-Encoding`` and ``Content-Length``, or several ``Content-Length``. A server
    that guessed could take part of a body for the next request (request smuggling)."""
    lengths = headers.get_all("Content-Length") or []
    if len(lengths) > 1 or (lengths and headers.get("Transfer-Encoding") is not None):
        return _error(
            400,
            "BadRequest",
            "The request's body length is ambiguous (Content-Length with Transfer-Encoding, "
            "or several Content-Length headers): send exactly one of them.",
        )
    return None


class _Handler(BaseHTTPRequestHandler):
    """The ``http.server`` front end of :func:`handle`."""

    runtime: Runtime
    max_upload_size: int
    protocol_version = "HTTP/1.1"
    server_version = "convexlite"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # an embedded server does not write to stderr; the host logs if it wants

    def handle(self) -> None:
        """Serve the connection's requests. Until a request starts arriving the
        connection is idle: close() ends it at once, and a new connection may close
        it to take its slot (see :class:`_Server`). Between two requests it waits at
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
        server: _Server = self.server  # type: ignore[assignment]
        connection = self.connection
        wait = (
            self.timeout if first else min(KEEP_ALIVE_TIMEOUT, self.timeout or KEEP_ALIVE_TIMEOUT)
        )
        if not server.mark_idle(connection):  # the server is closing
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

    def _serve(self) -> None:
        if self.server.closing:  # type: ignore[attr-defined]
            self.close_connection = True
            self.wfile.write(_CLOSING)
            return
        consumed = False

        def read_body(n: int) -> bytes:
            nonlocal consumed
            consumed = True
            return self.rfile.read(n)

        # The request line's own target: http.server folds a leading "//" into "/" in
        # self.path, which would route "//notes" to "/notes" here but not behind
        # wsgi_app, Engine.fetch or Convex (whose URL pathname keeps "//notes").
        # Its bytes outside URL syntax escaped, as a WHATWG URL parser (Convex's) escapes
        # them: http.server decoded them as Latin-1.
        words = self.requestline.split()
        target = escape_raw_path((words[1] if len(words) >= 2 else self.path).encode("latin-1"))
        host = self.headers.get("Host")
        if target.startswith("/"):
            address: Any = self.server.server_address
            scheme = _forwarded_scheme(self.headers)
            url = f"{scheme}://{host or f'{address[0]!s}:{address[1]}'}{target}"
        else:  # absolute-form: "GET http://host/path HTTP/1.1"
            url = target
        refusal = _refuse_framing(self.headers)
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
            )
        if consumed and response.status == 400:
            self.close_connection = True  # the body may be partly unread
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
        if self.server.closing:  # type: ignore[attr-defined]
            self.send_header("Connection", "close")  # sets close_connection too
        self.end_headers()
        if self.command != "HEAD":
            for part in response.body:
                self.wfile.write(part)
        if not response.complete:
            self.close_connection = True
        # An unread body would be taken for the next request: drop it (after the
        # answer, so a client that never sends the body it announced still gets one).
        if not consumed and (self.close_connection or not self._discard_body()):
            self.close_connection = True
            self._linger()

    def _linger(self) -> None:
        """Before closing with a request body unread (a 413, say): read and drop it, up
        to ``_LINGER_BYTES`` for up to ``_LINGER_SECONDS``. A client that is still
        sending when the socket closes gets a reset, not the answer already sent
        (RFC 9112 §9.6: close in stages); most clients read only once they have sent."""
        size = _content_length(self.headers.get("Content-Length") or "")
        if not size:
            return
        try:
            self.wfile.flush()
            self.connection.settimeout(1.0)
            deadline = time.monotonic() + _LINGER_SECONDS
            left = min(size, _LINGER_BYTES)
            while left > 0 and time.monotonic() < deadline:
                part = self.rfile.read1(min(left, _PIECE))
                if not part:
                    return
                left -= len(part)
        except OSError:  # the client stalled or went away: close now
            return

    def _discard_body(self) -> bool:
        """Read and drop an unused request body (up to 1 MiB); False if it could not be."""
        length = self.headers.get("Content-Length")
        if length is None:
            return self.headers.get("Transfer-Encoding") is None
        size = _content_length(length)
        if size is None or size > _PIECE:
            return False
        try:
            return len(self.rfile.read(size)) == size
        except OSError:  # the client stalled past the timeout
            return False

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _serve


class WsgiApp:
    """The WSGI front end of :func:`handle`, for hosts that mount it in their own server.

    It answers the storage endpoints and the HTTP actions. Mount it where file URLs
    should point, and give that place as ``site_url``::

        engine = Engine.open("./data", functions=app, site_url="https://example.com/files")
        # with werkzeug's DispatcherMiddleware, say: {"/files": engine.wsgi_app()}

    Routes are matched on ``PATH_INFO`` (the path after the mount point); an HTTP
    action's ``request.url`` is the full URL, mount point included.
    ``max_upload_size`` as for :class:`HttpServer`; timeouts and connection
    limits are the host server's.
    """

    def __init__(self, runtime: Runtime, max_upload_size: int = DEFAULT_MAX_UPLOAD_SIZE) -> None:
        self._runtime = runtime
        self._max_upload_size = max_upload_size

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        # PATH_INFO is decoded (latin-1 text of the raw bytes): escaped again, it routes
        # as the raw path does behind serve_http (Convex routes on escaped pathnames).
        target = quote(environ.get("PATH_INFO", "") or "/", safe=_PATH_SAFE, encoding="latin-1")
        if environ.get("QUERY_STRING"):
            target += "?" + environ["QUERY_STRING"]

        def header(name: str) -> str | None:
            key = name.upper().replace("-", "_")
            if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                value = environ.get(key)
            else:
                value = environ.get("HTTP_" + key)
            return str(value) if value else None

        def read_body(n: int) -> bytes:
            data: bytes = environ["wsgi.input"].read(n)
            return data

        def headers() -> list[tuple[str, str]]:
            pairs = [
                (key[5:].replace("_", "-").title(), str(value))
                for key, value in environ.items()
                if key.startswith("HTTP_")
            ]
            for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                if environ.get(key):
                    pairs.append((key.replace("_", "-").title(), str(environ[key])))
            return pairs

        host = environ.get("HTTP_HOST")
        if host is not None and not _valid_host(str(host)):
            # request_uri() would put it into the URL an HTTP action reads.
            response = _error(400, "BadRequest", f"The Host header {host!r} is not a host[:port].")
        else:
            response = handle(
                self._runtime,
                environ.get("REQUEST_METHOD", "GET"),
                target,
                header,
                read_body,
                self._max_upload_size,
                headers=headers,
                url=request_uri(environ, include_query=True),
            )
        # PEP 3333 forbids hop-by-hop headers to applications (wsgiref raises on one,
        # Proxy-Authenticate included): the host's server owns the connection.
        pairs = [(name, value) for name, value in response.headers if not is_hop_by_hop(name)]
        start_response(f"{response.status} {HTTPStatus(response.status).phrase}", pairs)
        if environ.get("REQUEST_METHOD") == "HEAD":
            return []
        return response.body


def _digest_header(value: str | None) -> str | None:
    """The base64 SHA-256 of a ``Digest: sha-256=<base64>`` header (other algorithms ignored)."""
    if not value:
        return None
    for part in value.split(","):
        algorithm, _, digest = part.strip().partition("=")
        if algorithm.lower() == "sha-256" and digest:
            return digest
    return None
