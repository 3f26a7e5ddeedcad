"""Running HTTP actions: from an :class:`HttpRequest` to an :class:`HttpResponse`.

:func:`respond` is the one path every front end takes (``Engine.serve_http``,
``Engine.wsgi_app``, ``Engine.fetch``):

1. the router looks the request up (``HEAD`` as ``GET``); no route answers ``404``
   ``No matching routes found`` in plain text, Convex's answer, whatever the method;
2. the identity comes from ``Authorization: Bearer <token>``, verified by the engine's
   auth configuration (on a worker thread: a provider may fetch its keys). Without the
   header it is ``None``; a header that does not verify does not refuse the request:
   ``ctx.auth.get_user_identity()`` raises the verification error, as in Convex;
3. the handler runs with an :class:`~engine.ActionCtx` on the caller's event loop;
4. a handler that raises (``SystemExit`` included: it ends the handler, not the
   host), or returns something other than an :class:`HttpResponse` (an awaitable it
   forgot to ``await`` is closed unrun), is logged to the ``engine.httpactions`` logger (with a request id and traceback)
   and answered ``500`` with Convex's redacted JSON body
   ``{"code": "[Request ID: <id>] Server Error"}``, plus ``"data"`` (the value in
   Convex's JSON encoding) for a :class:`~engine.ConvexError`. The traceback never
   reaches the client;
5. bodies are capped at Convex's 20 MiB (:data:`BODY_LIMIT`) both ways: a larger
   request body is a ``413`` ``PayloadTooLarge`` before the handler runs, a larger
   response a logged ``HttpResponseTooLarge`` and the redacted ``500``.

Cost: one dict lookup and a few prefix tests to route, a token verification when
the request carries one, then whatever the handler awaits.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import logging
import math
import secrets
import struct
from typing import TYPE_CHECKING, Any

from .contexts import ActionCtx, UnverifiedIdentity
from .errors import ConvexError, EngineError
from .httpmessages import Headers, HttpRequest, HttpResponse
from .router import HttpRouter

if TYPE_CHECKING:
    from .functions import Runtime

__all__ = ["BODY_LIMIT", "FROM_HEADER", "NOT_FOUND", "convex_json", "finish", "respond"]

_log = logging.getLogger(__name__)

#: Convex's body for a request no route matches (crates/isolate, HTTP action routing).
NOT_FOUND = "No matching routes found"
#: Bytes a request or response body may have: Convex's ``HTTP_ACTION_BODY_LIMIT``
#: (crates/udf/src/http_action.rs), 20 MiB.
BODY_LIMIT = 20 << 20
#: ``respond(identity=...)`` default: read the identity from the ``Authorization`` header.
FROM_HEADER: Any = object()
#: Headers the server frames or that concern one connection (RFC 9110 7.6.1, and
#: Trailer: bodies are whole here): never passed on from a handler's response.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "content-length",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


async def respond(
    runtime: Runtime, router: HttpRouter, request: HttpRequest, *, identity: Any = FROM_HEADER
) -> HttpResponse:
    """Route ``request`` and run its HTTP action; never raises for the handler's errors.

    ``identity``: a verified identity (or None) to use instead of the request's
    ``Authorization`` header (``Engine.fetch(auth=identity)``). The answer is the
    handler's response as returned; :func:`finish` makes it what goes on the wire.
    """
    if runtime.db.storage.closed:
        return HttpResponse.json(
            {"code": "EngineClosed", "message": "The database is closed."}, status=503
        )
    if len(request.body) > BODY_LIMIT:  # before routing, as behind serve_http and wsgi_app
        return HttpResponse.json(
            {"code": "PayloadTooLarge", "message": too_large(len(request.body))}, status=413
        )
    match = router.lookup(request.path, request.method)
    if match is None:
        return HttpResponse(
            NOT_FOUND, status=404, headers={"Content-Type": "text/plain; charset=utf-8"}
        )
    action, _, route = match
    if identity is FROM_HEADER:
        identity = await _identity(runtime, request.headers.get("authorization"))
    request_id = secrets.token_hex(8)
    where = f"{request.method} {request.path} (route {route}) [Request ID: {request_id}]"
    ctx = ActionCtx(runtime, identity, runtime.env)
    try:
        result = await action.handler(ctx, request)
    except ConvexError as error:
        _log.warning("HTTP action %s raised ConvexError: %s", where, error)
        return _server_error(request_id, error)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # this request itself is cancelled (its caller's task, or shutdown)
        _log.error("HTTP action %s let a CancelledError escape", where, exc_info=True)
        return _server_error(request_id, None)
    except (Exception, SystemExit):  # SystemExit: the handler's failure, not the host's
        _log.error("HTTP action %s raised", where, exc_info=True)
        return _server_error(request_id, None)
    if not isinstance(result, HttpResponse):
        if inspect.isawaitable(result):
            close = getattr(result, "close", None)
            if close is not None:
                close()  # never run: closed, else Python warns it was never awaited
            _log.error(
                "HTTP action %s returned an awaitable instead of an HttpResponse: did you "
                "forget `await` (return await ...)? It was never awaited, so what it would "
                "have run did not run.",
                where,
            )
            return _server_error(request_id, None)
        _log.error(
            "HTTP action %s returned %s, not an HttpResponse: return "
            "HttpResponse(body, status=..., headers=...) or HttpResponse.json(value)",
            where,
            type(result).__name__,
        )
        return _server_error(request_id, None)
    try:
        # Checked again as built: the handler may have reassigned its attributes.
        headers = result.headers
        checked = HttpResponse(
            result.body,
            status=result.status,
            headers=headers.pairs() if isinstance(headers, Headers) else headers,
        )
    except Exception:
        _log.error("HTTP action %s returned a response that is not valid", where, exc_info=True)
        return _server_error(request_id, None)
    if len(checked.body) > BODY_LIMIT:  # Convex's words (crates/isolate, http_action.rs)
        _log.error(
            "HTTP action %s: HttpResponseTooLarge: HTTP actions support responses up to "
            "20 MiB (returned response was %d bytes); stream large files from file "
            "storage (ctx.storage.get_url) instead",
            where,
            len(checked.body),
        )
        return _server_error(request_id, None)
    return checked


def too_large(size: int) -> str:
    """The message of a 413 for a request body of ``size`` bytes, over :data:`BODY_LIMIT`."""
    return (
        f"The request body has {size} bytes; HTTP actions take at most {BODY_LIMIT} "
        "(20 MiB, Convex's limit). Upload large files to an upload URL "
        "(ctx.storage.generate_upload_url()) instead."
    )


async def _identity(runtime: Runtime, header: str | None) -> Any:
    """The identity of an ``Authorization`` header: None without one, the verified
    identity of a good ``Bearer`` token, else an :class:`UnverifiedIdentity`."""
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return UnverifiedIdentity(
            EngineError(
                "The request's Authorization header is not `Bearer <token>`, so it has no "
                "identity; read the header yourself (request.headers['authorization']) "
                "for another scheme."
            )
        )
    try:
        return await asyncio.to_thread(runtime.identity, token.strip())
    except Exception as error:  # AuthError, or EngineError without providers
        return UnverifiedIdentity(error)


def _server_error(request_id: str, error: ConvexError | None) -> HttpResponse:
    body: dict[str, Any] = {"code": f"[Request ID: {request_id}] Server Error"}
    if error is not None:
        body["data"] = convex_json(error.data)
    return HttpResponse.json(body, status=500)


def finish(response: HttpResponse, *, head: bool) -> HttpResponse:
    """``response`` as sent: hop-by-hop headers dropped, ``Content-Length`` set (none
    on a 204 or 304, RFC 9110 §8.6), and for a ``HEAD`` request no body (its length is
    that of the ``GET`` answer)."""
    headers = [(k, v) for k, v in response.headers.pairs() if k.lower() not in _HOP_BY_HOP]
    if response.status not in (204, 304):
        headers.append(("Content-Length", str(len(response.body))))
    sent = HttpResponse(None if head else response.body, status=response.status, headers=headers)
    return sent


def convex_json(value: Any) -> Any:
    """A Convex value in Convex's JSON encoding (``convexToJson``): Int64 as
    ``{"$integer": <base64 of 8 little-endian bytes>}``, bytes as ``{"$bytes": <base64>}``,
    NaN, infinities and -0.0 as ``{"$float": <base64>}``; other values as JSON has them."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        if not -(1 << 63) <= value < 1 << 63:
            return str(value)  # not an Int64: ConvexError does not validate its data
        return {"$integer": base64.b64encode(struct.pack("<q", value)).decode()}
    if isinstance(value, float):
        if math.isfinite(value) and not (value == 0.0 and math.copysign(1.0, value) < 0):
            return value
        return {"$float": base64.b64encode(struct.pack("<d", value)).decode()}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, dict):
        return {str(k): convex_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [convex_json(v) for v in value]
    return repr(value)
