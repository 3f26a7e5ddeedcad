"""HTTP actions end to end: tests/app/http.py through Engine.fetch, a real server on
127.0.0.1 (urllib / http.client) and wsgi_app."""

from __future__ import annotations

import asyncio
import gc
import http.client
import io
import json
import logging
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults
from wsgiref.validate import validator

import pytest

from engine import (
    ConvexError,
    Engine,
    EngineError,
    Headers,
    HttpRequest,
    HttpResponse,
    HttpRouter,
    HttpServer,
    http_action,
)
from engine.httpactions import convex_json
from tests import app
from tests.app import files, notes
from tests.app import http as routes
from tests.waiting import wait_until

Answer = tuple[int, dict[str, str], bytes]
Call = Callable[..., Answer]
FRONT_ENDS = ["fetch", "server", "wsgi"]


@pytest.fixture
def engine(db_path: Path) -> Iterator[Engine]:
    with Engine.open(db_path, functions=app, durability="none") as handle:
        yield handle
        handle.check()


@pytest.fixture
def server(engine: Engine) -> Iterator[HttpServer]:
    with engine.serve_http("127.0.0.1", 0) as running:
        yield running


def over_http(url: str, method: str, body: bytes | None, headers: dict[str, str]) -> Answer:
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, _lower(response.getheaders()), response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, _lower(error.headers.items()), error.read()


def over_wsgi(wsgi: Any, method: str, path: str, body: bytes, headers: dict[str, str]) -> Answer:
    target, _, query = path.partition("?")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "/mount",
        "PATH_INFO": target,
        "QUERY_STRING": query,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    for name, value in headers.items():
        key = name.upper().replace("-", "_")
        environ[key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key] = value
    setup_testing_defaults(environ)
    answer: dict[str, Any] = {}

    def start_response(status: str, pairs: list[tuple[str, str]], exc_info: Any = None) -> Any:
        answer["status"], answer["headers"] = int(status.split()[0]), _lower(pairs)
        return lambda data: None

    result = validator(wsgi)(environ, start_response)
    try:
        data = b"".join(result)
    finally:
        getattr(result, "close", lambda: None)()
    return answer["status"], answer["headers"], data


def _lower(pairs: Any) -> dict[str, str]:
    return {name.lower(): value for name, value in pairs}


def caller(front: str, engine: Engine, **serve: Any) -> tuple[Call, Callable[[], None]]:
    """``call(method, path, body=None, headers=None) -> (status, headers, body)`` for one
    front end, and a function that stops it."""
    if front == "fetch":

        def call(method: str, path: str, body: bytes | None = None, headers: Any = None) -> Answer:
            response = engine.fetch(path, method=method, body=body, headers=headers)
            return response.status, _lower(response.headers.pairs()), response.body

        return call, lambda: None
    if front == "server":
        server = engine.serve_http("127.0.0.1", 0, **serve)

        def call(method: str, path: str, body: bytes | None = None, headers: Any = None) -> Answer:
            return over_http(server.url + path, method, body, headers or {})

        return call, server.close
    wsgi = engine.wsgi_app(**serve)

    def call(method: str, path: str, body: bytes | None = None, headers: Any = None) -> Answer:
        return over_wsgi(wsgi, method, path, body or b"", headers or {})

    return call, lambda: None


@pytest.fixture(params=FRONT_ENDS)
def call(request: pytest.FixtureRequest, engine: Engine) -> Iterator[Call]:
    function, stop = caller(request.param, engine)
    yield function
    stop()


def test_a_json_post_runs_a_mutation_that_a_query_then_sees(engine: Engine, call: Call) -> None:
    body = json.dumps({"text": "from http"}).encode()
    status, headers, answer = call("POST", "/notes", body, {"Content-Type": "application/json"})
    assert status == 201, answer
    assert headers["content-type"] == "application/json"
    assert headers["content-length"] == str(len(answer))
    note_id = json.loads(answer)["id"]
    assert engine.run(lambda ctx: ctx.db.get(note_id))["text"] == "from http"
    status, headers, answer = call("GET", "/notes")
    assert (status, json.loads(answer), headers["x-route"]) == (200, ["from http"], "notes")
    assert engine.query(notes.texts) == ["from http"]


def test_unrouted_paths_and_methods_get_convexs_404(call: Call) -> None:
    for method, path in [
        ("GET", "/nowhere"),
        ("DELETE", "/notes"),  # the path exists for other methods: still 404, as Convex
        ("PUT", "/whoami"),
        ("GET", "/echo"),  # the prefix /echo/ does not cover /echo
        ("OPTIONS", "/whoami"),
        # A URL's pathname keeps "//" (new URL("http://h//whoami").pathname is "//whoami"):
        # serve_http routed it to /whoami (http.server folds a leading "//" into "/").
        ("GET", "//whoami"),
    ]:
        status, headers, body = call(method, path)
        assert (status, body) == (404, b"No matching routes found"), (method, path)
        assert headers["content-type"] == "text/plain; charset=utf-8"


def test_a_raising_handler_is_a_redacted_500_logged_on_the_server(
    call: Call, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="engine.httpactions")
    status, headers, body = call("GET", "/fail")
    assert status == 500
    assert headers["content-type"] == "application/json"
    answer = json.loads(body)
    assert set(answer) == {"code"}
    assert answer["code"].startswith("[Request ID: ") and answer["code"].endswith("] Server Error")
    assert b"hunter2" not in body and b"Traceback" not in body and b"RuntimeError" not in body
    (record,) = [r for r in caplog.records if r.name == "engine.httpactions"]
    assert record.levelno == logging.ERROR and record.exc_info is not None
    assert "GET /fail" in record.getMessage()
    request_id = answer["code"][len("[Request ID: ") : -len("] Server Error")]
    assert request_id in record.getMessage()  # the client's id finds the server's log


def test_convex_error_data_reaches_the_client(call: Call) -> None:
    status, _, body = call("GET", "/fail-convex")
    answer = json.loads(body)
    assert status == 500
    assert answer["data"] == {"code": "NOT_ALLOWED", "limit": 3.0}
    assert answer["code"].endswith("] Server Error")


def test_a_handler_returning_no_response_is_a_500_with_a_clear_log(
    call: Call, caplog: pytest.LogCaptureFixture
) -> None:
    status, _, body = call("GET", "/not-a-response")
    assert status == 500 and b"oops" not in body
    (record,) = [r for r in caplog.records if r.name == "engine.httpactions"]
    assert "returned dict, not an HttpResponse" in record.getMessage()


def test_a_handler_returning_an_unawaited_call_is_told_to_await_it(
    call: Call, caplog: pytest.LogCaptureFixture
) -> None:
    # Found by review: the coroutine was left unawaited (Python's "coroutine ... was
    # never awaited" warning when it was collected) and the log did not say why.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        status, _, body = call("GET", "/forgets-await")
        gc.collect()
    assert status == 500 and json.loads(body)["code"].endswith("] Server Error")
    (record,) = [r for r in caplog.records if r.name == "engine.httpactions"]
    assert "did you forget `await`" in record.getMessage()
    assert [str(w.message) for w in caught if "never awaited" in str(w.message)] == []


def test_a_handler_raising_system_exit_is_a_500(
    call: Call, caplog: pytest.LogCaptureFixture
) -> None:
    # Found by review: SystemExit went past the handler's error handling: Engine.fetch
    # raised it, and a served request's thread ended with no answer and nothing logged.
    # As for scheduled actions, it is the handler's failure, not the host's.
    status, _, body = call("GET", "/exits")
    assert status == 500 and json.loads(body)["code"].endswith("] Server Error")
    (record,) = [r for r in caplog.records if r.name == "engine.httpactions"]
    assert record.levelno == logging.ERROR and "GET /exits" in record.getMessage()
    assert call("GET", "/notes")[0] == 200  # the front end still answers


def test_prefix_routes_see_the_request(call: Call) -> None:
    status, _, body = call(
        "PUT",
        "/echo/a/b?x=1&x=2&y=",
        b"caf\xc3\xa9",
        {"Content-Type": "text/plain", "X-Tag": "t1"},
    )
    assert status == 200, body
    seen = json.loads(body)
    assert seen["method"] == "PUT"
    assert seen["path"] == "/echo/a/b"
    assert seen["query"] == {"x": "1", "y": ""}
    assert seen["body"] == "café"
    assert seen["contentType"] == "text/plain"
    assert seen["tags"] == ["t1"]
    assert seen["url"].startswith("http://") and seen["url"].endswith("/echo/a/b?x=1&x=2&y=")
    assert call("GET", "/echo/deep/x")[1]["x-route"] == "deep"  # the longest prefix
    assert call("GET", "/echo/exact")[1]["x-route"] == "exact"  # an exact path first
    assert call("POST", "/echo/deep/x")[0] == 200  # /echo/deep/ is GET only: /echo/ answers
    assert json.loads(call("POST", "/echo/deep/x")[2])["method"] == "POST"


def test_head_runs_the_get_route_without_its_body(call: Call) -> None:
    call("POST", "/notes", b'{"text": "x"}')
    _, get_headers, get_body = call("GET", "/notes")
    status, headers, body = call("HEAD", "/notes")
    assert (status, body) == (200, b"")
    assert headers["content-length"] == str(len(get_body)) == get_headers["content-length"]
    assert headers["x-route"] == "notes"
    assert call("HEAD", "/nowhere")[0] == 404


def test_options_goes_to_the_apps_route(call: Call) -> None:
    status, headers, body = call("OPTIONS", "/notes")
    assert (status, body) == (204, b"")
    assert headers["access-control-allow-methods"] == "GET, POST"
    # The storage endpoints keep answering their own preflights.
    status, headers, _ = call("OPTIONS", "/api/storage/upload?token=x")
    assert status == 204 and "POST" in headers["access-control-allow-methods"]


def test_storage_endpoints_still_answer_beside_the_routes(engine: Engine, call: Call) -> None:
    from urllib.parse import urlsplit

    upload = urlsplit(engine.mutation(files.upload_url))
    status, _, body = call(
        "POST", f"{upload.path}?{upload.query}", b"file bytes", {"Content-Type": "text/plain"}
    )
    assert status == 200, body
    storage_id = json.loads(body)["storageId"]
    download = urlsplit(engine.query(files.url, {"id": storage_id})).path
    status, headers, body = call("GET", download)
    assert (status, body, headers["content-type"]) == (200, b"file bytes", "text/plain")
    status, _, body = call("GET", "/api/storage/nothing-here")
    assert (status, json.loads(body)["code"]) == (404, "FileNotFound")


@pytest.mark.parametrize("front", ["server", "wsgi"])
def test_request_bodies_are_capped(engine: Engine, front: str) -> None:
    call, stop = caller(front, engine, max_upload_size=100)
    try:
        status, _, body = call("POST", "/echo/x", b"y" * 101)
        assert status == 413 and json.loads(body)["code"] == "PayloadTooLarge"
        status, _, body = call("POST", "/echo/x", b"y" * 100)
        assert status == 200 and json.loads(body)["body"] == "y" * 100
    finally:
        stop()


@pytest.mark.parametrize("front", FRONT_ENDS)
def test_bodies_are_capped_at_convexs_20_mib_both_ways(
    engine: Engine, front: str, caplog: pytest.LogCaptureFixture
) -> None:
    """HTTP_ACTION_BODY_LIMIT in Convex (crates/udf/src/http_action.rs): a request body
    over 20 MiB is a 413 before the handler runs, a response over it a redacted 500."""
    limit = 20 << 20
    call, stop = caller(front, engine)
    try:
        status, headers, body = call("POST", f"/sized?n={limit}", b"y" * limit)
        assert (status, headers["x-received"], len(body)) == (200, str(limit), limit)
        status, _, body = call("POST", "/sized?n=1", b"y" * (limit + 1))
        # Size before route, on every front end (an unrouted path too). serve_http
        # refuses from Content-Length, then reads and drops the body before closing: an
        # ordinary client, still sending, would get a reset instead of the 413.
        unrouted, _, _ = call("POST", "/no-such-route", b"y" * (limit + 1))
        assert unrouted == 413
        assert status == 413, body[:200]
        answer = json.loads(body)
        assert answer["code"] == "PayloadTooLarge"
        assert "20971521 bytes" in answer["message"] and "20 MiB" in answer["message"]
        with caplog.at_level(logging.ERROR, logger="engine.httpactions"):
            status, _, body = call("POST", f"/sized?n={limit + 1}", b"")
        assert status == 500 and json.loads(body)["code"].endswith("] Server Error")
        assert "HttpResponseTooLarge: HTTP actions support responses up to 20 MiB" in caplog.text
        assert "(returned response was 20971521 bytes)" in caplog.text
    finally:
        stop()


def test_a_chunked_body_is_taken_and_a_bad_header_is_a_400(
    engine: Engine, server: HttpServer
) -> None:
    # A chunked body was answered 411 (Convex's server takes it): now it is decoded.
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request("POST", "/echo/x", body=iter([b"chu", b"nk"]))  # sent chunked
        response = connection.getresponse()
        assert (response.status, json.loads(response.read())["body"]) == (200, "chunk")
    finally:
        connection.close()
    with pytest.raises(EngineError, match="line break or control character"):
        engine.fetch("/echo/x", headers={"X-Bad": "a\x00b"})


def test_concurrent_requests_run_at_once(
    engine: Engine, server: HttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    together = routes.Together()
    monkeypatch.setattr(routes, "TOGETHER", together)
    answers: list[Answer] = []
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            answers.append(over_http(f"{server.url}/together?n=8", "GET", None, {}))
            body = json.dumps({"text": f"note {index}"}).encode()
            answers.append(over_http(f"{server.url}/notes", "POST", body, {}))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert sorted(status for status, _, _ in answers) == [200] * 8 + [201] * 8
    assert together.most == 8  # all eight handlers were running at once
    assert sorted(engine.query(notes.texts)) == sorted(f"note {i}" for i in range(8))


def test_fetch_and_afetch(engine: Engine) -> None:
    async def main() -> HttpResponse:
        with pytest.raises(EngineError, match="use `await engine.afetch"):
            engine.fetch("/notes")
        return await engine.afetch("/echo/a", method="post", body="hi")

    response = asyncio.run(main())
    assert response.status == 200 and json.loads(response.body)["body"] == "hi"
    assert json.loads(response.body)["method"] == "POST"
    assert json.loads(engine.fetch("/echo/a", method="POST").body)["body"] == ""
    with pytest.raises(EngineError, match="starting with '/'"):
        engine.fetch("notes")


@pytest.mark.parametrize("target", ["route", "upload"])
def test_fetch_returns_once_subscriptions_show_its_writes(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    # Found by a subscriptions hunt: engine.action() returns once subscriptions reflect
    # what its ctx.run_mutation calls committed, but engine.fetch() (an HTTP action, or
    # an upload to a URL the engine handed out) returned at once, so a subscription read
    # right after it could still miss the write (as convex-test's t.fetch never would).
    manager = engine._db.subscriptions
    step, wait_for = manager._step, manager.wait_for
    held, release, waiting = threading.Event(), threading.Event(), threading.Event()

    def held_step(new: Any) -> None:  # the worker, held until released
        if not release.is_set():
            held.set()
            release.wait(10)
        step(new)

    def waited(ts: int, timeout: float = 30.0) -> None:
        waiting.set()
        wait_for(ts, timeout)

    if target == "route":
        ref, first, expected = notes.texts, [], ["hi"]
        url, body = "/notes", b'{"text": "hi"}'
    else:
        ref, first, expected = files.files, [], [10]
        url, body = engine.mutation(files.upload_url), b"file bytes"
    with engine.subscribe(ref, {}) as sub:
        assert sub.value == first
        monkeypatch.setattr(manager, "_step", held_step)
        monkeypatch.setattr(manager, "wait_for", waited)
        assert held.wait(10)  # the worker's next poll is held
        returned = threading.Event()
        seen: list[Any] = []

        def post() -> None:
            engine.fetch(url, method="POST", body=body, headers={"Content-Type": "text/plain"})
            value = sub.value
            seen.append(value if target == "route" else [f["size"] for f in value])
            returned.set()

        poster = threading.Thread(target=post)
        poster.start()
        wait_until(lambda: returned.is_set() or waiting.is_set())
        release.set()
        poster.join(10)
        assert seen == [expected]


def test_a_fetched_response_reads_its_body_as_json(engine: Engine) -> None:
    # convex-test: `const response = await t.fetch(...); await response.json()`. On a
    # response, json() reads the body; on the class, HttpResponse.json(data) still builds one.
    response = engine.fetch("/notes", method="POST", body='{"text": "hi"}')
    assert response.status == 201
    assert response.json() == {"id": json.loads(response.body)["id"]}
    assert HttpResponse.json({"a": 1}).json() == {"a": 1}
    with pytest.raises(ValueError):
        HttpResponse("not json").json()
    with pytest.raises(TypeError, match=r"HttpResponse\.json\(data\)"):
        response.json({"a": 1})  # type: ignore[call-arg]


def test_fetch_takes_the_urls_the_engine_hands_out(engine: Engine, tmp_path: Path) -> None:
    # An upload URL or a file URL had to be cut down to its path by hand: "fetch(path)
    # takes a path starting with '/'", though the docs say tests upload with fetch.
    upload = engine.mutation(lambda ctx: ctx.storage.generate_upload_url())
    assert upload.startswith("http://")
    response = engine.fetch(upload, method="POST", body=b"abc")
    assert response.status == 200, response.text()
    storage_id = json.loads(response.body)["storageId"]
    assert engine.fetch(engine.query(lambda ctx: ctx.storage.get_url(storage_id))).body == b"abc"
    with pytest.raises(EngineError, match=r"not under its origin 'http://127\.0\.0\.1:3210'"):
        engine.fetch("http://example.com/notes")
    with pytest.raises(EngineError, match="not under its origin"):
        engine.fetch("http://127.0.0.1:32100/notes")  # a longer port is another origin
    with Engine.open(
        tmp_path / "mounted", functions=app, durability="none", site_url="https://example.com/app"
    ) as mounted:
        assert mounted.fetch("https://example.com/app/notes").status == 200
        assert mounted.fetch("https://example.com/app/notes?x=1").status == 200
        with pytest.raises(EngineError, match="not under its origin"):
            mounted.fetch("https://example.com/notes")


def test_fetch_refuses_a_body_that_is_not_bytes_or_str(engine: Engine) -> None:
    # bytes(body) raised "'str' object cannot be interpreted as an integer" for a dict,
    # and sent 3 zero bytes for body=3.
    with pytest.raises(EngineError, match=r"takes bytes \(any buffer\) or str, got dict \(json"):
        engine.fetch("/echo/a", method="POST", body={"text": "hi"})  # type: ignore[arg-type]
    with pytest.raises(EngineError, match=r"takes bytes \(any buffer\) or str, got int"):
        engine.fetch("/echo/a", method="POST", body=3)  # type: ignore[arg-type]
    sent = engine.fetch("/echo/a", method="POST", body=bytearray(b"hi"))
    assert json.loads(sent.body)["body"] == "hi"
    # Found by review: other buffers (array.array), which bytes() took, were refused.
    import array

    buffer = array.array("B", b"hi")
    sent = engine.fetch("/echo/a", method="POST", body=buffer)  # type: ignore[arg-type]
    assert json.loads(sent.body)["body"] == "hi"


def test_a_closed_engine_answers_503(db_path: Path) -> None:
    from engine.httpserver import handle

    engine = Engine.open(db_path, functions=app, durability="none")
    runtime = engine._runtime
    assert handle(runtime, "GET", "/notes", lambda name: None, bytes).status == 200
    engine.close()
    response = handle(runtime, "GET", "/notes", lambda name: None, bytes)
    assert response.status == 503
    assert json.loads(b"".join(response.body))["code"] == "EngineClosed"
    with pytest.raises(EngineError, match="closed"):
        engine.fetch("/notes")


def test_a_router_can_be_passed_to_open(db_path: Path) -> None:
    @http_action
    async def count(ctx: Any, request: HttpRequest) -> HttpResponse:
        return HttpResponse(str(len(await ctx.run_query(notes.texts))))

    router = HttpRouter()
    router.route(path="/count", method="GET", handler=count)
    with Engine.open(db_path, functions=notes, durability="none", http=router) as engine:
        engine.mutation(notes.add, {"text": "a"})
        assert engine.fetch("/count").text() == "1"
        assert engine._runtime.registry.http is router
    with pytest.raises(EngineError, match="also has HTTP routes"):
        Engine.open(db_path, functions=app, durability="none", http=router)
    with pytest.raises(EngineError, match=r"takes an HttpRouter, got dict"):
        Engine.open(db_path, durability="none", http={"/count": count})  # type: ignore[arg-type]
    with Engine.open(db_path, durability="none") as bare:  # no routes: the old JSON 404
        response = bare.fetch("/count")
        assert response.status == 404 and json.loads(response.body)["code"] == "NotFound"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("", "must have an attribute `http = HttpRouter\\(\\)`; found nothing"),
        ("http = 5\n", "found int 5"),
        ("import engine\nhttp = engine.http_action\n", "found function"),
        # A router under another name (`router`) was told to rename the module.
        (
            "import engine\nrouter = engine.HttpRouter()\n",
            "found nothing. Name the router `http` \\(it is 'router'\\)",
        ),
    ],
)
def test_a_misconfigured_http_module_refuses_to_open(
    db_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, message: str
) -> None:
    import importlib

    name = f"badapp_{abs(hash(source))}"
    package = tmp_path / name
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "http.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module(name)
    try:
        with pytest.raises(EngineError, match=message):
            Engine.open(db_path, functions=module, durability="none")
    finally:
        for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[loaded]


def test_headers_are_case_insensitive_and_checked() -> None:
    headers = Headers([("Content-Type", "text/plain"), ("X-Tag", "a"), ("x-tag", "b")])
    assert headers["content-type"] == "text/plain"
    assert headers["X-TAG"] == "a, b" and headers.get_all("X-Tag") == ["a", "b"]
    assert list(headers) == ["content-type", "x-tag"] and len(headers) == 2
    assert "CONTENT-TYPE" in headers and "nope" not in headers and 5 not in headers
    assert headers.get("nope") is None
    with pytest.raises(KeyError):
        headers["nope"]
    for bad in ([("Bad Name", "x")], [("", "x")], {"X": "a\r\nInjected: 1"}):
        with pytest.raises(EngineError):
            Headers(bad)


def test_responses_check_their_arguments() -> None:
    assert HttpResponse("é").headers["content-type"] == "text/plain;charset=UTF-8"
    assert HttpResponse("x", headers={"content-type": "text/html"}).headers.get_all(
        "Content-Type"
    ) == ["text/html"]
    assert HttpResponse(b"\x00").headers.get("content-type") is None
    assert HttpResponse(None).body == b""
    assert HttpResponse.json([1.5], status=202).status == 202
    for status in (199, 600, True, "200"):
        with pytest.raises(EngineError, match="must be an int from 200 to 599"):
            HttpResponse(status=status)  # type: ignore[arg-type]
    with pytest.raises(EngineError, match="HttpResponse.json"):
        HttpResponse({"a": 1})  # type: ignore[arg-type]
    request = HttpRequest("post", "http://h/p?a=1&a=2", body="{}")
    assert (request.method, request.path, request.query_lists, request.json()) == (
        "POST",
        "/p",
        {"a": ["1", "2"]},
        {},
    )


def test_convex_error_data_uses_convexs_json_encoding() -> None:
    data = {"n": 1, "b": b"\x01", "f": float("inf"), "z": -0.0, "l": [True, None, 2.5]}
    assert convex_json(data) == {
        "n": {"$integer": "AQAAAAAAAAA="},
        "b": {"$bytes": "AQ=="},
        "f": {"$float": "AAAAAAAA8H8="},
        "z": {"$float": "AAAAAAAAAIA="},
        "l": [True, None, 2.5],
    }
    assert convex_json(1 << 70) == str(1 << 70)
    assert isinstance(ConvexError(data).data, dict)


# -- found by review (HTTP protocol and framing) ---------------------------------------


def _raw_exchange(server: HttpServer, data: bytes, wait: float = 1.0) -> bytes:
    """Send raw bytes on one connection; everything the server sends back until it
    closes the connection or goes quiet for ``wait`` seconds."""
    import socket

    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait) as sock:
        sock.sendall(data)
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                return received
            if not chunk:
                return received
            received += chunk


def test_null_body_statuses_carry_no_body_and_keep_the_connection_in_step(
    server: HttpServer,
) -> None:
    for status in (204, 205, 304):
        with pytest.raises(EngineError, match="null body status cannot have body"):
            HttpResponse(b"HTTP/1.1 200 OK\r\n\r\nforged", status=status)
    # A 204 (the app's preflight) then a GET on the same kept-alive connection.
    received = _raw_exchange(
        server,
        b"OPTIONS /notes HTTP/1.1\r\nHost: x\r\n\r\nGET /notes HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    first, _, rest = received.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 204")
    assert b"content-length" not in first.lower()  # RFC 9110 section 8.6
    assert rest.startswith(b"HTTP/1.1 200"), received


def test_ambiguous_body_lengths_are_refused_and_the_connection_closed(
    server: HttpServer,
) -> None:
    hidden = b"GET /fail HTTP/1.1\r\nHost: x\r\n\r\n"
    for framing in (
        b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n" % len(hidden),
        b"Content-Length: 0\r\nContent-Length: %d\r\n" % len(hidden),
    ):
        received = _raw_exchange(
            server, b"POST /echo/x HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n" + hidden
        )
        assert received.startswith(b"HTTP/1.1 400"), received
        assert received.count(b"HTTP/1.1 ") == 1  # the hidden request was never served


def test_a_host_header_cannot_move_the_path_or_query(engine: Engine, server: HttpServer) -> None:
    received = _raw_exchange(
        server, b"GET /echo/x?real=1 HTTP/1.1\r\nHost: h?admin=1#\r\nConnection: close\r\n\r\n"
    )
    assert received.startswith(b"HTTP/1.1 400"), received
    status, _, body = over_wsgi(engine.wsgi_app(), "GET", "/echo/x?real=1", b"", {"Host": "h?a=1#"})
    assert status == 400, body
    status, _, body = over_wsgi(engine.wsgi_app(), "GET", "/echo/x?real=1", b"", {"Host": "h:8"})
    assert status == 200 and json.loads(body)["query"] == {"real": "1"}


def test_a_path_starting_with_two_slashes_is_a_path_not_a_host(engine: Engine) -> None:
    # urlsplit("//evil/notes") reads host "evil" and path "/notes": behind wsgi_app the
    # request reached the /notes route.
    status, _, body = over_wsgi(engine.wsgi_app(), "GET", "//evil/notes", b"", {})
    assert (status, body) == (404, b"No matching routes found")
    assert engine.fetch("//evil/notes").status == 404


def test_a_bad_response_is_a_500_whatever_the_handler_did(
    call: Call, caplog: pytest.LogCaptureFixture
) -> None:
    for path in ("/changed", "/cancelled", "/euro"):
        status, _, body = call("GET", path)
        assert status == 500, (path, body)
        assert json.loads(body)["code"].endswith("Server Error")
    assert call("GET", "/notes")[0] == 200  # and the server keeps serving


def test_a_cancelled_fetch_is_cancelled_not_answered(engine: Engine) -> None:
    async def cancel_a_slow_request() -> None:
        task = asyncio.create_task(engine.afetch("/slow?seconds=5"))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_a_slow_request())


def test_fetch_escapes_its_path_and_routes_under_a_mounted_site_url(db_path: Path) -> None:
    with Engine.open(
        db_path, functions=app, durability="none", site_url="https://example.com/files"
    ) as engine:
        response = engine.fetch("/echo/a b/café?q=1")
        assert response.status == 200, response.text()
        seen = json.loads(response.body)
        assert seen["path"] == "/echo/a%20b/caf%C3%A9"  # what a client's request carries
        assert seen["url"] == "https://example.com/files/echo/a%20b/caf%C3%A9?q=1"
        assert seen["query"] == {"q": "1"}


def test_json_has_no_nan_or_infinity() -> None:
    with pytest.raises(ValueError):
        HttpResponse.json({"x": float("nan")})
    with pytest.raises(ValueError, match="not JSON"):
        HttpRequest("POST", "http://x/", body=b'{"v": NaN}').json()


def test_the_server_queues_bursts_of_connections(server: HttpServer) -> None:
    # socketserver's default backlog of 5 reset connections in a burst of 300.
    assert server._server.request_queue_size >= 128  # type: ignore[attr-defined]


def test_fetch_drops_a_fragment_as_a_client_does(engine: Engine) -> None:
    assert engine.fetch("/notes#top").status == 200
    seen = json.loads(engine.fetch("/echo/x?tag=a#top").body)
    assert (seen["path"], seen["query"]) == ("/echo/x", {"tag": "a"})


def test_dot_segments_are_resolved_before_routing_as_convexs_url_parser_does(
    call: Call,
) -> None:
    # Convex builds request.url with Rust's url::Url (WHATWG parsing) and routes on its
    # pathname: "/echo/../notes" is "/notes", "%2e" is a dot, "\\" is a "/". Routed as
    # sent, "/echo/../notes" ran the /echo/ handler, with the dots in request.path.
    for path in ("/echo/../notes", "/echo/x/./../../notes"):
        status, headers, body = call("GET", path)
        assert (status, headers.get("x-route")) == (200, "notes"), (path, body)
    assert call("GET", "/echo/./deep/x")[1]["x-route"] == "deep"
    status, _, body = call("GET", "/echo/a/./b/../c/.?q=1")
    seen = json.loads(body)
    assert (status, seen["path"]) == (200, "/echo/a/c/")
    assert seen["url"].endswith("/echo/a/c/?q=1") and ".." not in seen["url"]
    assert call("GET", "/../../notes")[1].get("x-route") == "notes"  # no climbing above /
    # Into the storage endpoints' area as well, whatever the router has.
    status, _, body = call("GET", "/echo/../api/storage/nothing-here")
    assert (status, json.loads(body)["code"]) == (404, "FileNotFound")


def test_a_raw_request_path_is_escaped_and_unfolded_as_convex_does(
    engine: Engine, server: HttpServer
) -> None:
    # Bytes a URL path cannot hold arrive escaped in Convex's pathname (UTF-8 bytes,
    # quotes, braces), and a backslash is a slash; http.server decoded them as Latin-1.
    received = _raw_exchange(
        server,
        b'GET /echo/caf\xc3\xa9/"{x}"\\y HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n',
    )
    body = json.loads(received.partition(b"\r\n\r\n")[2])
    assert body["path"] == "/echo/caf%C3%A9/%22%7Bx%7D%22/y"
    assert body["url"] == "http://h/echo/caf%C3%A9/%22%7Bx%7D%22/y"
    # An escaped dot is a dot (WSGI servers decode PATH_INFO before the app sees it).
    for path in (b"/echo/%2E%2e/notes", b"/echo/x/.%2E/../notes"):
        received = _raw_exchange(
            server, b"GET " + path + b" HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
        )
        assert b"\r\nX-Route: notes\r\n" in received, received


def test_a_handlers_date_and_server_headers_replace_the_servers_own(db_path: Path) -> None:
    # Found by sending a handler's Date through serve_http: the answer carried two Date
    # headers (a singleton field, RFC 9110 section 6.6.1) and two Server headers, the
    # standard library's and the handler's. Convex's server (hyper) adds Date only when
    # the response has none, and no Server header.
    @http_action
    async def dated(ctx: Any, request: HttpRequest) -> HttpResponse:
        return HttpResponse(
            "ok",
            headers=[
                ("Date", "Mon, 01 Jan 2001 00:00:00 GMT"),
                ("Server", "mine"),
                ("Set-Cookie", "a=1"),
                ("Set-Cookie", "b=2"),
            ],
        )

    router = HttpRouter()
    router.route(path="/dated", method="GET", handler=dated)
    with (
        Engine.open(db_path, http=router, durability="none") as engine,
        engine.serve_http("127.0.0.1", 0) as server,
    ):
        received = _raw_exchange(
            server, b"GET /dated HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
        )
        head = received.partition(b"\r\n\r\n")[0].lower().split(b"\r\n")
        assert [line for line in head if line.startswith(b"date:")] == [
            b"date: mon, 01 jan 2001 00:00:00 gmt"
        ]
        assert [line for line in head if line.startswith(b"server:")] == [b"server: mine"]
        assert [line for line in head if line.startswith(b"set-cookie:")] == [
            b"set-cookie: a=1",
            b"set-cookie: b=2",
        ]
        # Without them, the server still dates its answers.
        received = _raw_exchange(
            server, b"GET /nowhere HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
        )
        assert received.lower().count(b"\r\ndate: ") == 1


def test_closing_the_server_lets_a_request_in_flight_finish_and_answer(engine: Engine) -> None:
    # Found by closing a server while a request ran: its handler ran to the end (a
    # mutation it ran was committed) but close() had shut its socket down, so the
    # client saw "Remote end closed connection without response" and could only retry.
    # The request is held by /gated until the server is closing (before, a 0.6 s /slow
    # request had to be still running 0.2 s plus one more request later).
    server = engine.serve_http("127.0.0.1", 0)
    gate = routes.GATE = routes.Gate()
    answers: list[Any] = []

    def client() -> None:
        answers.append(over_http(server.url + "/gated", "GET", None, {}))

    thread = threading.Thread(target=client)
    thread.start()
    try:
        assert gate.entered.wait(10)  # in flight
        idle = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        idle.request("GET", "/notes")
        idle.getresponse().read()  # kept alive, idle: closed at once
        started = time.monotonic()
        closer = threading.Thread(target=server.close)
        closer.start()
        wait_until(lambda: server._server.closing, 10)
    finally:
        gate.opened.set()
    closer.join(10)
    assert time.monotonic() - started < 3  # idle connections did not hold close() up
    thread.join()
    status, headers, body = answers[0]
    assert (status, body) == (200, b"done")
    assert headers.get("connection") == "close"
    with pytest.raises((http.client.HTTPException, OSError)):
        idle.request("GET", "/notes")
        idle.getresponse()
    idle.close()


def test_several_host_headers_are_refused(server: HttpServer) -> None:
    # RFC 9112 3.2: a request with more than one Host is a 400. The first one became
    # request.url's host, while a proxy in front may have checked the last one.
    received = _raw_exchange(
        server,
        b"GET /echo/x HTTP/1.1\r\nHost: evil.example\r\nHost: app.example\r\n"
        b"Connection: close\r\n\r\n",
    )
    assert received.startswith(b"HTTP/1.1 400"), received
    assert b"several Host headers" in received


def test_hop_by_hop_headers_of_a_handler_are_dropped_on_every_front_end(db_path: Path) -> None:
    # Found by serving wsgi_app with wsgiref: a handler's Upgrade, TE or
    # Proxy-Authenticate header made wsgiref raise "Hop-by-hop header ... not allowed"
    # (PEP 3333 forbids them to applications) and the client got wsgiref's 500. Behind
    # serve_http an Upgrade or TE header went out, though it concerns one connection.
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    @http_action
    async def hoppy(ctx: Any, request: HttpRequest) -> HttpResponse:
        return HttpResponse(
            "need auth",
            status=407,
            headers=[
                ("Proxy-Authenticate", "Basic"),
                ("Upgrade", "h2c"),
                ("TE", "trailers"),
                ("Trailer", "X-Sum"),
                ("Proxy-Connection", "keep-alive"),
                ("X-Kept", "yes"),
            ],
        )

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    router = HttpRouter()
    router.route(path="/hoppy", method="GET", handler=hoppy)
    dropped = {"upgrade", "te", "trailer", "proxy-connection"}
    with Engine.open(db_path, http=router, durability="none") as engine:
        for front in FRONT_ENDS:
            call, stop = caller(front, engine)
            try:
                status, headers, body = call("GET", "/hoppy")
            finally:
                stop()
            assert (status, body, headers["x-kept"]) == (407, b"need auth", "yes"), front
            assert not dropped & set(headers), (front, headers)
        wsgi = make_server("127.0.0.1", 0, engine.wsgi_app(), handler_class=QuietHandler)
        thread = threading.Thread(target=wsgi.handle_request)
        thread.start()
        try:
            status, headers, body = over_http(
                f"http://127.0.0.1:{wsgi.server_port}/hoppy", "GET", None, {}
            )
        finally:
            thread.join()
            wsgi.server_close()
        assert (status, body, headers["x-kept"]) == (407, b"need auth", "yes")
        assert "proxy-authenticate" not in headers  # PEP 3333: not an application's


def test_request_url_takes_its_scheme_from_a_tls_proxy_as_convex_does(
    server: HttpServer,
) -> None:
    # The docs put a TLS-terminating reverse proxy in front of serve_http; request.url
    # still said http://, so an app building a redirect or a callback URL from it sent
    # browsers to http. Convex (local_backend/http_actions.rs) takes the scheme from
    # X-Forwarded-Proto, else from Forwarded's proto=, else http.
    def seen_url(extra: bytes) -> str:
        received = _raw_exchange(
            server, b"GET /echo/x?q=1 HTTP/1.1\r\nHost: app.example\r\n" + extra + b"\r\n"
        )
        return str(json.loads(received.partition(b"\r\n\r\n")[2])["url"])

    assert seen_url(b"Connection: close\r\n") == "http://app.example/echo/x?q=1"
    assert (
        seen_url(b"X-Forwarded-Proto: https\r\nConnection: close\r\n")
        == "https://app.example/echo/x?q=1"
    )
    assert (
        seen_url(b'Forwarded: for=1.2.3.4;proto="https", for=5.6.7.8\r\nConnection: close\r\n')
        == "https://app.example/echo/x?q=1"
    )
    assert (  # proxies in a chain append theirs: the first is the client's
        seen_url(b"X-Forwarded-Proto: https, http\r\nConnection: close\r\n")
        == "https://app.example/echo/x?q=1"
    )
    # Only a scheme: anything else is ignored.
    assert (
        seen_url(b"X-Forwarded-Proto: javascript:alert(1)//\r\nConnection: close\r\n")
        == "http://app.example/echo/x?q=1"
    )


def test_a_status_without_a_standard_reason_phrase_is_served_by_every_front_end(
    db_path: Path,
) -> None:
    # wsgi_app looked the reason phrase up with http.HTTPStatus(status), which raises
    # ValueError for a status Python does not name (299, 420, 599): a handler's valid
    # HttpResponse(status=299) crashed the WSGI request, where serve_http and fetch sent it.
    @http_action
    async def odd(ctx: Any, request: HttpRequest) -> HttpResponse:
        return HttpResponse("odd", status=int(request.query_params["status"]))

    router = HttpRouter()
    router.route(path="/odd", method="GET", handler=odd)
    with Engine.open(db_path, http=router, durability="none") as engine:
        for front in FRONT_ENDS:
            call, stop = caller(front, engine)
            try:
                for status in (299, 420, 599):
                    answer = call("GET", f"/odd?status={status}")
                    assert answer[0] == status and answer[2] == b"odd", (front, answer)
            finally:
                stop()


def _ipv6_loopback() -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
def test_serve_http_listens_on_an_ipv6_address(engine: Engine) -> None:
    # serve_http("::1") raised socket.gaierror "Address family for hostname not
    # supported" (ThreadingHTTPServer binds AF_INET sockets only), though the server
    # writes its URL with brackets for such an address. And a request without a Host
    # header (HTTP/1.0) got a request.url of "http://::1:port/...", which is no URL.
    import socket

    with engine.serve_http("::1", 0) as server:
        assert server.url == f"http://[::1]:{server.port}"
        status, _, body = over_http(server.url + "/echo/a?x=1", "GET", None, {})
        assert status == 200 and json.loads(body)["url"] == server.url + "/echo/a?x=1"
        with socket.create_connection(("::1", server.port), timeout=5) as sock:
            sock.sendall(b"GET /echo/b HTTP/1.0\r\n\r\n")
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), received
        assert json.loads(body)["url"] == server.url + "/echo/b"


def test_an_absolute_form_target_without_a_path_is_the_root(db_path: Path) -> None:
    # "GET http://host HTTP/1.1" (absolute-form, as proxies send) has an empty path,
    # which is "/" (RFC 9112 3.2.2; a WHATWG URL's pathname is "/"): it was looked up
    # as "" and answered 404 "No matching routes found" beside a route for "/".
    @http_action
    async def root(ctx: Any, request: HttpRequest) -> HttpResponse:
        return HttpResponse.json({"path": request.path, "query": request.query})

    router = HttpRouter()
    router.route(path="/", method="GET", handler=root)
    with (
        Engine.open(db_path, http=router, durability="none") as engine,
        engine.serve_http("127.0.0.1", 0) as server,
    ):
        for target, query in ((b"http://h", ""), (b"http://h?a=1", "a=1")):
            received = _raw_exchange(
                server, b"GET " + target + b" HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
            )
            head, _, body = received.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 "), received
            assert json.loads(body) == {"path": "/", "query": query}


def test_wsgi_request_url_is_escaped_as_serve_http_escapes_it(
    engine: Engine, server: HttpServer
) -> None:
    # wsgi_app built request.url with wsgiref's request_uri: its path escaped
    # ":@!$&'()*+" (so it disagreed with request.path and with serve_http, whose
    # URL keeps them, as Convex's pathname does), and the query went in raw: UTF-8 bytes
    # as Latin-1 text ("cafÃ©" in query_params) and spaces inside the URL.
    target = "/echo/a:b@c!$&'()*+,;=~?q=caf\xc3\xa9&r=a b"
    received = _raw_exchange(
        server,
        b"GET " + target.replace(" ", "%20").encode("latin-1") + b" HTTP/1.1\r\n"
        b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    served = json.loads(received.partition(b"\r\n\r\n")[2])
    path_info, _, query = target.partition("?")
    status, _, body = over_wsgi(engine.wsgi_app(), "GET", path_info + "?" + query, b"", {})
    seen = json.loads(body)
    assert status == 200
    assert seen["url"] == "http://127.0.0.1/mount/echo/a:b@c!$&'()*+,;=~?q=caf%C3%A9&r=a%20b"
    assert seen["path"] == served["path"] == "/echo/a:b@c!$&'()*+,;=~"
    assert seen["query"] == served["query"] == {"q": "café", "r": "a b"}
    assert seen["url"].removeprefix("http://127.0.0.1/mount") == served["url"].removeprefix(
        "http://127.0.0.1"
    )


def test_requests_check_their_arguments() -> None:
    # HttpRequest (built by tests that call a handler directly) turned body=5 into five
    # zero bytes (bytes(5)), and raised bare TypeError, AttributeError or ValueError for
    # a dict body, a method or URL that is no str, headers that are no mapping or pairs,
    # and an unparsable URL; HttpResponse already raised EngineError saying what it takes.
    bad: list[tuple[tuple[Any, ...], dict[str, Any], str]] = [
        (("POST", "http://h/x"), {"body": 5}, r"body=\.\.\.\) takes bytes, str"),
        (("POST", "http://h/x"), {"body": {"a": 1}}, r"json\.dumps"),
        ((5, "http://h/x"), {}, r"method must be a str"),
        (("GET", None), {}, r"url must be a str"),
        (("GET", "http://[bad/x"), {}, r"not a valid URL"),
        (("GET", "http://h/x"), {"path": 5}, r"path must be a str"),
        (("GET", "http://h/x"), {"headers": 5}, r"headers must be a mapping"),
    ]
    for args, kwargs, message in bad:
        with pytest.raises(EngineError, match=message):
            HttpRequest(*args, **kwargs)
    with pytest.raises(EngineError, match="headers must be a mapping"):
        Headers(5)  # type: ignore[arg-type]
    assert HttpRequest("PUT", "http://h/x", body=bytearray(b"ab")).body == b"ab"
    assert HttpRequest("PUT", "http://h/x", body=memoryview(b"cd")).body == b"cd"


def test_fetch_refuses_a_method_that_is_not_an_http_token(engine: Engine) -> None:
    # fetch(method=5) or method=None raised AttributeError ('int' object has no attribute
    # 'upper'); a method with a space or a line break, which no client can send, was
    # looked up and answered 404 as if it had been.
    for method in (5, None, "", "GE T", "GET\r\nX-Injected: 1"):
        with pytest.raises(EngineError, match="fetch\\(method=...\\) must be an HTTP method"):
            engine.fetch("/echo/a", method=method)  # type: ignore[arg-type]
    assert engine.fetch("/echo/a", method="patch").status == 200


def test_wsgi_takes_a_chunked_body_its_server_has_decoded(engine: Engine) -> None:
    # A WSGI server that decodes a chunked body (gunicorn, werkzeug) sets no
    # CONTENT_LENGTH and marks wsgi.input as ending with the body
    # ("wsgi.input_terminated"); wsgi_app answered 411 LengthRequired anyway, so a
    # browser's streamed upload or POST never reached the endpoint behind such a server.
    wsgi = engine.wsgi_app(max_upload_size=64)

    def post(path: str, body: bytes, terminated: bool = True) -> Answer:
        environ: dict[str, Any] = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": path.partition("?")[0],
            "QUERY_STRING": path.partition("?")[2],
            "HTTP_TRANSFER_ENCODING": "chunked",
            "CONTENT_TYPE": "text/plain",
            "wsgi.input": io.BytesIO(body),
        }
        setup_testing_defaults(environ)
        environ["wsgi.input_terminated"] = terminated
        answer: dict[str, Any] = {}

        def start_response(status: str, pairs: Any, exc_info: Any = None) -> Any:
            answer["status"] = int(status.split()[0])
            return lambda data: None

        data = b"".join(wsgi(environ, start_response))
        return answer["status"], {}, data

    status, _, body = post("/echo/x", b"streamed")
    assert (status, json.loads(body)["body"]) == (200, "streamed")
    upload = urllib.parse.urlsplit(engine.mutation(files.upload_url))
    status, _, body = post(f"{upload.path}?{upload.query}", b"a file")
    assert status == 200, body
    assert engine.get_file(json.loads(body)["storageId"]) == b"a file"
    status, _, body = post("/echo/x", b"x" * 65)
    assert (status, json.loads(body)["code"]) == (413, "PayloadTooLarge")
    status, _, body = post("/echo/x", b"streamed", terminated=False)  # where would it end?
    assert (status, json.loads(body)["code"]) == (411, "LengthRequired")


class _CountingBody:
    """A decoded chunked body of ``size`` bytes, made as it is read; counts what was read."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.read_bytes = 0

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        self.read_bytes += n
        return b"x" * n


def test_wsgi_reads_a_chunked_body_only_for_a_request_it_serves(engine: Engine) -> None:
    # Found by review: wsgi_app read a decoded chunked body to its end (up to
    # max_upload_size, 256 MiB) before routing: an upload with a forged token, or an
    # HTTP action's body over Convex's 20 MiB, was held whole in memory first.
    wsgi = engine.wsgi_app()

    def post(target: str, body: _CountingBody) -> tuple[int, bytes]:
        path, _, query = target.partition("?")
        environ: dict[str, Any] = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "HTTP_TRANSFER_ENCODING": "chunked",
            "wsgi.input": body,
        }
        setup_testing_defaults(environ)
        environ["wsgi.input_terminated"] = True
        answer: list[int] = []

        def start_response(status: str, pairs: Any, exc_info: Any = None) -> Any:
            answer.append(int(status.split()[0]))
            return lambda data: None

        data = b"".join(wsgi(environ, start_response))
        return answer[0], data

    forged = _CountingBody(40 << 20)
    status, _ = post("/api/storage/upload?token=forged", forged)
    assert (status, forged.read_bytes) == (401, 0)
    big = _CountingBody(40 << 20)
    status, data = post("/echo/x", big)
    assert (status, json.loads(data)["code"]) == (413, "PayloadTooLarge")
    assert big.read_bytes <= (20 << 20) + (1 << 20)  # Convex's cap, plus one piece


def test_fetch_escapes_and_routes_a_path_as_serve_http_does(
    engine: Engine, server: HttpServer
) -> None:
    # Engine.fetch escaped with urllib's quote, which escapes "|^[]\" in a path and
    # "{}|^`[]\" in a query, and keeps "'" in a query: a URL parser (a client's, and
    # serve_http's escaping) does the opposite, and reads "\" in a path as "/". So
    # fetch("/echo/a\\b") reached /echo/a%5Cb where a client reaches /echo/a/b, and a
    # route for "/a|b" answered a client but was 404 through fetch.
    for target in ("/echo/a|b^c[d]\\e", "/echo/x?q={a}|^`[]\\'\"&r=caf\u00e9 x"):
        seen = json.loads(engine.fetch(target).body)
        wire = target.replace(" ", "%20").encode()
        received = _raw_exchange(
            server, b"GET " + wire + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        served = json.loads(received.partition(b"\r\n\r\n")[2])
        assert seen["path"] == served["path"], target
        assert seen["query"] == served["query"], target
        assert seen["url"].removeprefix(server.url) == served["url"].removeprefix(
            "http://127.0.0.1"
        ), target


def test_wsgi_routes_a_path_as_serve_http_does(engine: Engine, server: HttpServer) -> None:
    # wsgi_app re-escaped PATH_INFO with urllib's quote, which escapes "|^[]": a client's
    # raw "/a|b" routed as "/a|b" behind serve_http (and Convex) but as "/a%7Cb" behind
    # wsgi_app. A "%", "#" or "?" of PATH_INFO was escaped in the request ("%25", "%23",
    # "%3F") and must stay so.
    for wire, path_info in (
        ("/echo/a|b^c[d]", "/echo/a|b^c[d]"),
        ("/echo/caf%C3%A9/a%20b", "/echo/caf\xc3\xa9/a b"),
        ("/echo/100%25/%23", "/echo/100%/#"),
    ):
        received = _raw_exchange(
            server,
            b"GET " + wire.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        )
        served = json.loads(received.partition(b"\r\n\r\n")[2])
        status, _, body = over_wsgi(engine.wsgi_app(), "GET", path_info, b"", {})
        assert status == 200, body
        assert json.loads(body)["path"] == served["path"] == wire, wire


def test_wsgi_routes_on_the_raw_target_when_the_server_passes_it(
    engine: Engine, server: HttpServer
) -> None:
    # Found by review: PATH_INFO is decoded, so a client's "%7C" (encodeURIComponent's
    # "|") reached wsgi_app as "|" and routed as "/a|b", where serve_http (and Convex)
    # route "/a%7Cb". gunicorn and werkzeug pass the raw target as RAW_URI, uwsgi as
    # REQUEST_URI: it is used when it agrees with PATH_INFO.
    wsgi = engine.wsgi_app()
    for wire in ("/echo/a%7Cb", "/echo/a|b", "/echo/a%2Fb", "/echo/caf%C3%A9", "/echo/a%zz"):
        received = _raw_exchange(
            server,
            b"GET " + wire.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        )
        served = json.loads(received.partition(b"\r\n\r\n")[2])["path"]
        path_info = urllib.parse.unquote_to_bytes(wire).decode("latin-1")
        for key in ("RAW_URI", "REQUEST_URI"):
            status, _, body = over_wsgi_raw(wsgi, path_info, {key: "/mount" + wire + "?q=1"})
            assert status == 200, body
            assert json.loads(body)["path"] == served, (wire, key)
    # A PATH_INFO some middleware rewrote is routed as it says, not as the raw target.
    status, _, body = over_wsgi_raw(wsgi, "/echo/other", {"RAW_URI": "/mount/echo/a%7Cb"})
    assert (status, json.loads(body)["path"]) == (200, "/echo/other")


def over_wsgi_raw(wsgi: Any, path_info: str, extra: dict[str, str]) -> Answer:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "/mount",
        "PATH_INFO": path_info,
        "QUERY_STRING": "q=1",
        "wsgi.input": io.BytesIO(b""),
        **extra,
    }
    setup_testing_defaults(environ)
    answer: dict[str, Any] = {}

    def start_response(status: str, pairs: list[tuple[str, str]], exc_info: Any = None) -> Any:
        answer["status"] = int(status.split()[0])
        return lambda data: None

    data = b"".join(wsgi(environ, start_response))
    return answer["status"], {}, data


def test_fetch_refuses_a_path_with_a_lone_surrogate(engine: Engine) -> None:
    # A lone surrogate ("\udcff", as os.fsdecode leaves undecodable bytes) has no UTF-8
    # form: fetch raised a bare UnicodeEncodeError while escaping the path.
    for path in ("/echo/\udcff", "/echo/x?q=\ud800"):
        with pytest.raises(EngineError, match="lone surrogate"):
            engine.fetch(path)


def test_str_bodies_with_a_lone_surrogate_are_sent_as_fetch_sends_them() -> None:
    # HttpResponse("...\udcff") and HttpRequest(body="...\ud800") raised a bare
    # UnicodeEncodeError; Fetch's Response and Request turn a lone surrogate into U+FFFD
    # (a string body is a USVString), as text() already reads bad bytes back.
    assert HttpResponse("a\udcffb").body == "a\ufffdb".encode()
    assert HttpRequest("POST", "http://h/x", body="\ud800!").body == "\ufffd!".encode()


def test_fetch_sends_a_str_body_with_a_lone_surrogate_as_fetch_does(engine: Engine) -> None:
    # Engine.fetch(body="\udcff") raised a bare UnicodeEncodeError.
    sent = engine.fetch("/echo/a", method="POST", body="x\udcff")
    assert json.loads(sent.body)["body"] == "x\ufffd"


def test_text_and_json_decode_the_body_as_fetch_does() -> None:
    # Found by review: Fetch's text() and json() run "UTF-8 decode", which drops a
    # leading BOM and turns invalid bytes into U+FFFD. text() kept the BOM, and json()
    # let Python guess the encoding: invalid UTF-8 inside a string raised
    # UnicodeDecodeError, and a body shaped as UTF-16 was read as UTF-16.
    for make in (
        lambda body: HttpRequest("POST", "http://h/x", body=body),
        lambda body: HttpResponse(body),
    ):
        assert make(b"\xef\xbb\xbfhi").text() == "hi"
        assert make(b"\xef\xbb\xbf\xef\xbb\xbfhi").text() == "\ufeffhi"  # only one is dropped
        assert make(b'\xef\xbb\xbf{"a": 1}').json() == {"a": 1}
        assert make(b'{"a": "\xff"}').json() == {"a": "\ufffd"}
        with pytest.raises(ValueError):  # UTF-16 is not decoded: not JSON as UTF-8
            make('{"a": 1}'.encode("utf-16-le")).json()
