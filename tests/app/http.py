"""The test app's HTTP routes, as a Convex app's ``convex/http.ts``."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from engine import ActionCtx, ConvexError, HttpRequest, HttpResponse, HttpRouter, http_action

from . import notes


@http_action
async def add_note(ctx: ActionCtx, request: HttpRequest) -> HttpResponse:
    """POST /notes {"text": ...}: runs a mutation, answers 201 with the new id."""
    note_id = await ctx.run_mutation(notes.add, {"text": request.json()["text"]})
    return HttpResponse.json({"id": note_id}, status=201)


@http_action
async def list_notes(ctx: ActionCtx, request: HttpRequest) -> HttpResponse:
    """GET /notes: every note's text, through a query."""
    return HttpResponse.json(await ctx.run_query("notes:texts"), headers={"X-Route": "notes"})


@http_action
async def whoami(ctx: ActionCtx, request: HttpRequest) -> HttpResponse:
    """GET /whoami: the subject of the request's identity, from the handler and a query."""
    identity = ctx.auth.get_user_identity()
    via_query = await ctx.run_query("notes:who")
    return HttpResponse.json(
        {"subject": None if identity is None else identity.subject, "viaQuery": via_query}
    )


@http_action
async def echo(ctx: ActionCtx, request: HttpRequest) -> HttpResponse:
    """Any method under /echo/: what the handler saw."""
    return HttpResponse.json(
        {
            "method": request.method,
            "path": request.path,
            "url": request.url,
            "query": request.query_params,
            "body": request.text(),
            "contentType": request.headers.get("content-type"),
            "tags": request.headers.get_all("x-tag"),
        }
    )


@http_action
async def echo_deep(ctx: ActionCtx, request: HttpRequest) -> HttpResponse:
    return HttpResponse("deep", headers={"X-Route": "deep"})


@http_action
async def exact(ctx: ActionCtx, request: HttpRequest) -> HttpResponse:
    return HttpResponse("exact", headers={"X-Route": "exact"})


@http_action
async def fail(ctx: ActionCtx, request: HttpRequest) -> HttpResponse:
    raise RuntimeError("secret detail: password=hunter2")


@http_action
async def fail_convex(ctx: ActionCtx, request: HttpRequest) -> HttpResponse:
    raise ConvexError({"code": "NOT_ALLOWED", "limit": 3.0})


@http_action
async def not_a_response(ctx: ActionCtx, request: HttpRequest) -> Any:
    return {"oops": True}


@http_action
async def forgets_await(ctx: ActionCtx, request: HttpRequest) -> Any:
    return ctx.run_query(notes.texts, {})  # no await: a bug the engine names


@http_action
async def exits(ctx: ActionCtx, request: HttpRequest) -> HttpResponse:
    raise SystemExit(3)


@http_action
async def preflight(ctx: ActionCtx, request: HttpRequest) -> HttpResponse:
    """OPTIONS /notes: CORS is the app's job, as in Convex."""
    return HttpResponse(
        None,
        status=204,
        headers={
            "Access-Control-Allow-Origin": "*",
            "Access-Control-Allow-Methods": "GET, POST",
        },
    )


@http_action
async def slow(ctx: ActionCtx, request: HttpRequest) -> HttpResponse:
    """GET /slow?seconds=s: sleeps, so concurrent requests overlap."""
    await asyncio.sleep(float(request.query_params.get("seconds", "0.2")))
    return HttpResponse("done")


class Together:
    """What ``/together`` has seen: requests inside it now, the most at once, and when
    the first arrived (a test gives it a fresh one)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.inside = 0
        self.most = 0
        self.first: float | None = None


TOGETHER = Together()


@http_action
async def together(ctx: ActionCtx, request: HttpRequest) -> HttpResponse:
    """GET /together?n=k: answers once k requests have been inside at the same time, or
    10 s after the first arrived, whichever comes first; the body is the most seen."""
    n = int(request.query_params["n"])
    seen = TOGETHER
    with seen.lock:
        seen.inside += 1
        seen.most = max(seen.most, seen.inside)
        if seen.first is None:
            seen.first = time.monotonic()
        deadline = seen.first + 10.0
    try:
        while seen.most < n and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
    finally:
        with seen.lock:
            seen.inside -= 1
    return HttpResponse(str(seen.most))


class Gate:
    """``/gated``'s two events: ``entered`` when a request is inside, ``opened`` to let
    it answer (a test gives it a fresh one)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()


GATE = Gate()


@http_action
async def gated(ctx: ActionCtx, request: HttpRequest) -> HttpResponse:
    """GET /gated: sets ``GATE.entered``, answers ``done`` once ``GATE.opened`` is set (or
    after 10 s): a request held in flight for as long as a test needs."""
    gate = GATE
    gate.entered.set()
    deadline = time.monotonic() + 10.0
    while not gate.opened.is_set() and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    return HttpResponse("done")


@http_action
async def changed_after(ctx: ActionCtx, request: HttpRequest) -> HttpResponse:
    """GET /changed: a response whose status is reassigned out of range after it was built."""
    response = HttpResponse("fine")
    response.status = 1000
    return response


@http_action
async def cancelled_inside(ctx: ActionCtx, request: HttpRequest) -> HttpResponse:
    """GET /cancelled: a CancelledError of the handler's own escapes it."""
    raise asyncio.CancelledError


@http_action
async def non_latin_header(ctx: ActionCtx, request: HttpRequest) -> HttpResponse:
    """GET /euro: a header value that HTTP cannot carry."""
    return HttpResponse("price", headers={"X-Price": "5 \u20ac"})


@http_action
async def sized(ctx: ActionCtx, request: HttpRequest) -> HttpResponse:
    """POST /sized?n=N: answers N bytes, and the size of the body it received."""
    n = int(request.query_params.get("n", "0"))
    return HttpResponse(
        b"x" * n,
        headers={"X-Received": str(len(request.body)), "Content-Type": "text/plain"},
    )


http = HttpRouter()
http.route(path="/sized", method="POST", handler=sized)
http.route(path="/changed", method="GET", handler=changed_after)
http.route(path="/cancelled", method="GET", handler=cancelled_inside)
http.route(path="/euro", method="GET", handler=non_latin_header)
http.route(path="/notes", method="POST", handler=add_note)
http.route(path="/notes", method="GET", handler=list_notes)
http.route(path="/notes", method="OPTIONS", handler=preflight)
http.route(path="/whoami", method="GET", handler=whoami)
for _method in ("GET", "POST", "PUT", "DELETE", "PATCH"):
    http.route(path_prefix="/echo/", method=_method, handler=echo)
http.route(path_prefix="/echo/deep/", method="GET", handler=echo_deep)
http.route(path="/echo/exact", method="GET", handler=exact)
http.route(path="/fail", method="GET", handler=fail)
http.route(path="/fail-convex", method="GET", handler=fail_convex)
http.route(path="/not-a-response", method="GET", handler=not_a_response)
http.route(path="/forgets-await", method="GET", handler=forgets_await)
http.route(path="/exits", method="GET", handler=exits)
http.route(path="/slow", method="GET", handler=slow)
http.route(path="/together", method="GET", handler=together)
http.route(path="/gated", method="GET", handler=gated)
