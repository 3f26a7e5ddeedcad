"""The WSGI front end: :class:`WsgiApp`, what ``Engine.wsgi_app()`` returns for a host to
mount in its own web server.

It turns a WSGI ``environ`` into a call of :func:`engine.httphandling.handle` (the
storage endpoints and the HTTP actions), and the :class:`~engine.httpresponses.Response`
into ``start_response`` and a body, without hop-by-hop headers (PEP 3333). Timeouts and
connection limits are the host server's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes
from wsgiref.util import application_uri, is_hop_by_hop

from .errors import EngineError
from .httpbodies import _PIECE, DEFAULT_MAX_UPLOAD_SIZE
from .httphandling import _valid_host, handle
from .httpmessages import escape_raw_path
from .httpresponses import Response, _error

if TYPE_CHECKING:
    from .functions import Runtime

__all__ = ["WsgiApp"]


#: Characters of PATH_INFO that were escaped in the request line ("%" first).
_ESCAPED_AGAIN = ((b"%", b"%25"), (b"?", b"%3F"), (b"#", b"%23"), (b"\\", b"%5C"))


def _escaped(path: str) -> str:
    """A decoded WSGI path (``PATH_INFO``, ``SCRIPT_NAME``: Latin-1 text of the bytes)
    escaped as ``serve_http`` escapes a raw request path."""
    raw = path.encode("latin-1", "replace")
    for char, escape in _ESCAPED_AGAIN:
        raw = raw.replace(char, escape)
    return escape_raw_path(raw)


def _raw_path(environ: dict[str, Any]) -> str | None:
    """The request's path after the mount point as the client sent it, escaped as
    ``serve_http`` escapes a raw path, when the server passes the raw target
    (``RAW_URI``: gunicorn, werkzeug; ``REQUEST_URI``: uwsgi, werkzeug) and it agrees
    with ``PATH_INFO``; None otherwise. ``PATH_INFO`` alone cannot tell a client's
    ``%7C`` from its ``|``, which serve_http (and Convex) route apart."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if not isinstance(raw, str) or not raw.startswith("/"):
        return None
    path = raw.partition("#")[0].partition("?")[0]
    mount = str(environ.get("SCRIPT_NAME", ""))
    if not path.startswith(mount):
        return None  # an escaped or rewritten mount point: PATH_INFO it is
    rest = path[len(mount) :]
    if unquote_to_bytes(rest).decode("latin-1") != str(environ.get("PATH_INFO", "")):
        return None  # middleware changed PATH_INFO: route what it says
    return escape_raw_path((rest or "/").encode("latin-1", "replace"))


def _reason(status: int) -> str:
    """The reason phrase of ``status`` for the WSGI status line: Python's name for it, or
    ``Unknown`` for a status it does not name (a handler may answer any of 200..599, and
    ``HTTPStatus(299)`` raises ValueError)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _url(environ: dict[str, Any], target: str) -> str:
    """The request's absolute URL: the scheme and host, the mount point (``SCRIPT_NAME``)
    and ``target``, escaped as behind ``serve_http`` (wsgiref's ``request_uri`` escapes
    ``:@!$&'()*+`` in the path, which a URL keeps, and leaves the query raw)."""
    root = application_uri({**environ, "SCRIPT_NAME": ""}).rstrip("/")
    mount = _escaped(str(environ.get("SCRIPT_NAME", "")))
    if mount and not environ.get("PATH_INFO"):  # "/files" itself, routed as "/"
        target = target[1:]
    return root + mount + target


def _read_to_end(stream: Any, max_size: int) -> bytes | None:
    """A terminated ``wsgi.input`` read to its end, in pieces; None past ``max_size`` bytes."""
    parts: list[bytes] = []
    size = 0
    while part := stream.read(_PIECE):
        size += len(part)
        if size > max_size:
            return None
        parts.append(part)
    return b"".join(parts)


def _body(response: Response) -> Iterator[bytes]:
    """The response's body; raises once sent if it stopped short (a file deleted, or the
    engine closed, mid-download): a WSGI server aborts the connection when the iterable
    raises, as ``serve_http`` closes it, so a client sees fewer bytes than the
    ``Content-Length`` instead of a short body taken as whole."""
    yield from response.body
    if not response.complete:
        raise EngineError(
            "The file was deleted while it was being sent (or the engine closed): the "
            "download is cut short, and the connection must close."
        )


class WsgiApp:
    """The WSGI front end of :func:`handle`, for hosts that mount it in their own server.

    It answers the storage endpoints and the HTTP actions. Mount it where file URLs
    should point, and give that place as ``site_url``::

        engine = Engine.open("./data", functions=app, site_url="https://example.com/files")
        # with werkzeug's DispatcherMiddleware, say: {"/files": engine.wsgi_app()}

    Routes are matched on ``PATH_INFO`` (the path after the mount point); an HTTP
    action's ``request.url`` is the full URL, mount point included.
    ``max_upload_size`` as for :class:`~engine.httpserver.HttpServer`; timeouts and connection
    limits are the host server's. A chunked request body is taken when the server decoded
    it and marks where it ends (``wsgi.input_terminated``), else answered 411.
    """

    def __init__(self, runtime: Runtime, max_upload_size: int = DEFAULT_MAX_UPLOAD_SIZE) -> None:
        self._runtime = runtime
        self._max_upload_size = max_upload_size

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        # The raw target when the server passes it; else PATH_INFO, which is decoded
        # (latin-1 text of the raw bytes): escaped again as serve_http escapes a raw
        # path, it routes as the raw path does there (Convex routes on escaped
        # pathnames), except that an escape the client chose ("%7C" for "|") is lost.
        # Its "%", "?", "#" and "\\" were escaped in the request, so they are again.
        target = _raw_path(environ) or _escaped(str(environ.get("PATH_INFO", "") or "/"))
        if environ.get("QUERY_STRING"):
            # Raw bytes as Latin-1 text (PEP 3333): escaped as serve_http escapes a query.
            query = str(environ["QUERY_STRING"]).encode("latin-1", "replace")
            target += escape_raw_path(b"?" + query)

        stream = environ.get("wsgi.input")
        length = environ.get("CONTENT_LENGTH") or None
        read_all: Callable[[int], bytes | None] | None = None
        chunked = length is None and environ.get("HTTP_TRANSFER_ENCODING") is not None
        if chunked and stream is not None and environ.get("wsgi.input_terminated"):
            # The server decoded a chunked body and ends wsgi.input with it: handle()
            # reads it to its end (capped by the endpoint's limit) once it knows the
            # request will be served (after the route and an upload's token).
            def read_all(max_size: int) -> bytes | None:
                return _read_to_end(stream, max_size)

        def header(name: str) -> str | None:
            key = name.upper().replace("-", "_")
            if key == "CONTENT_LENGTH":
                value = length
            elif key == "CONTENT_TYPE":
                value = environ.get(key)
            else:
                value = environ.get("HTTP_" + key)
            return str(value) if value else None

        def read_body(n: int) -> bytes:
            data: bytes = stream.read(n) if stream is not None else b""
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
            # _url() would put it into the URL an HTTP action reads.
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
                url=_url(environ, target),
                read_all=read_all,
            )
        # PEP 3333 forbids hop-by-hop headers to applications (wsgiref raises on one,
        # Proxy-Authenticate included): the host's server owns the connection.
        pairs = [(name, value) for name, value in response.headers if not is_hop_by_hop(name)]
        start_response(f"{response.status} {_reason(response.status)}", pairs)
        if environ.get("REQUEST_METHOD") == "HEAD":
            return []
        return _body(response)
