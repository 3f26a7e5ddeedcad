"""The request handling both HTTP front ends share: :func:`handle` answers one request,
to the storage endpoints or an HTTP action, whatever server carries it.

Two front ends call it: ``Engine.serve_http(host, port)`` runs an
:class:`~engine.httpserver.HttpServer` (``http.server``) on a daemon thread, and
``Engine.wsgi_app()`` returns a :class:`~engine.wsgi.WsgiApp` a host mounts in its own
web server. Paths under ``/api/storage/`` are the storage endpoints' (see
:mod:`engine.httpstorage`); every other path belongs to the engine's HTTP actions when
it has a router (see :mod:`engine.router` and :mod:`engine.httpactions`: a request is
read in full, its ``Content-Length`` at most 20 MiB (Convex's limit) or a smaller
``max_upload_size``, then its action runs on an event loop of the request's thread),
else is answered 404. Convex serves files and HTTP actions on different origins; here
they share one, so routes may not be defined under ``/api/storage``.

``OPTIONS`` on a storage path answers a CORS preflight, so a browser page on another
origin can upload and download, as with Convex (for HTTP actions, CORS is the app's
job, as in Convex); a method an endpoint does not take gets 405. The engine's own
errors are JSON ``{"code": ..., "message": ...}`` (:mod:`engine.httpresponses`).

Also here, for the front ends to check what only they see before calling
:func:`handle`: ``_valid_host`` (the ``Host`` header), ``_absolute_form`` (a request
target that is a URL, as proxies send), ``_forwarded_scheme`` (the
scheme of ``request.url`` behind a proxy), and ``_refuse_framing`` (a body length that
is ambiguous). Paths are escaped as a raw request line's
(:func:`engine.httpmessages.escape_raw_path`) by every front end.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from . import files, httpactions
from .errors import EngineError
from .httpbodies import DEFAULT_MAX_UPLOAD_SIZE, _body, _content_length
from .httpmessages import HttpRequest, normalize_path
from .httpresponses import _CORS, Response, _error, _failed
from .httpstorage import _PREFIX, _UPLOAD, _download, _upload

if TYPE_CHECKING:
    from .functions import Runtime
    from .router import HttpRouter

__all__ = ["handle"]


_HEADER_LIST = re.compile(
    r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+(?:[ \t]*,[ \t]*[!#$%&'*+\-.^_`|~0-9A-Za-z]+)*"
)


def _allowed_headers(header: Callable[[str], str | None]) -> str:
    """A preflight's ``Access-Control-Allow-Headers``: the headers it asks for, as
    Convex's CORS layer mirrors them (a browser upload may add its own), when they are
    a list of header names; else the endpoints' own."""
    asked = (header("Access-Control-Request-Headers") or "").strip()
    return asked if _HEADER_LIST.fullmatch(asked) else "Content-Type, Digest"


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
    read_all: Callable[[int], bytes | Response | None] | None = None,
) -> Response:
    """Answer one request, to the storage endpoints or an HTTP action, whatever server
    carries it.

    ``target`` is the path (after any mount point) with its query string;
    ``header(name)`` returns a request header or None; ``read_body(n)`` reads
    ``n`` bytes of the request body (only called for an upload with a valid
    token, or a request an HTTP action will answer). ``headers()`` returns every
    request header and ``url`` is the request's absolute URL, both for HTTP actions
    (defaults: none, and the engine's origin followed by ``target``). ``read_all(n)``:
    for a chunked body, its bytes decoded and read to the end (None past ``n``, or
    the answer refusing a body that is not chunked coding), called where
    ``read_body`` would be.

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
        path, query = split.path or "/", split.query  # "http://host" is "/" (RFC 9112 3.2.2)
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
            read_all,
        )
    if method == "OPTIONS":
        return Response(
            204,
            [
                _CORS,
                ("Access-Control-Allow-Methods", "GET, HEAD, POST, OPTIONS"),
                ("Access-Control-Allow-Headers", _allowed_headers(header)),
                ("Access-Control-Max-Age", "86400"),
            ],  # no Content-Length: never in a 204 (RFC 9110 8.6)
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
            return _upload(runtime, query, header, read_body, max_upload_size, read_all)
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
    read_all: Callable[[int], bytes | Response | None] | None = None,
) -> Response:
    """Answer a request with the HTTP action its route names (see :mod:`engine.httpactions`)."""
    body = b""
    cap = min(max_size, httpactions.BODY_LIMIT)
    if method not in ("GET", "HEAD", "OPTIONS") and (  # Convex hands these no body
        router.lookup(path, method) is not None or _refused_from_head(header, cap)
    ):
        # A request to no route is answered 404 from its head, its body unread (the
        # server drops it, or closes): a client that waits for a 100 sends none.
        data = _body(header, read_body, cap, "The request body", optional=True, read_all=read_all)
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


def _refused_from_head(header: Callable[[str], str | None], cap: int) -> bool:
    """Whether the head alone refuses the body of an HTTP action's request (a bad
    ``Content-Length``, or one over ``cap``): refused before routing, as
    :func:`engine.httpactions.respond` checks the size before the route."""
    value = header("Content-Length")
    if value is None:
        return False
    length = _content_length(value)
    return length is None or length > cap


_HOST = re.compile(r"(?:[A-Za-z0-9._~!$&'()*+,;=%-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


def _valid_host(host: str) -> bool:
    """Whether a ``Host`` header is a host and optional port (RFC 9110 §7.2): nothing
    that would move the path or query of the URL an HTTP action sees."""
    return _HOST.fullmatch(host) is not None


_ABSOLUTE_FORM = re.compile(r"(?i:https?)://([^/?#]*)(.*)", re.DOTALL)


def _absolute_form(target: str) -> tuple[str, str] | None:
    """An absolute-form request target (``"http://host:8/path?q"``, as proxies send) as
    its host and its origin-form (``"/path?q"``), which RFC 9112 §3.2.2 has a server use
    in place of the ``Host`` header; None unless the scheme is ``http`` or ``https``
    and the authority a ``host[:port]`` (:func:`_valid_host`: no userinfo)."""
    match = _ABSOLUTE_FORM.fullmatch(target)
    if match is None or not _valid_host(match[1]):
        return None
    rest = match[2]
    return match[1], rest if rest.startswith("/") else "/" + rest  # "http://h?q" is "/?q"


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
