"""engine.router: HttpRouter's route rules, errors and lookup, as Convex's router.ts."""

from __future__ import annotations

from typing import Any

import pytest

from engine import (
    ROUTABLE_HTTP_METHODS,
    EngineError,
    HttpAction,
    HttpRequest,
    HttpResponse,
    HttpRouter,
    http_action,
)


@http_action
async def one(ctx: Any, request: HttpRequest) -> HttpResponse:
    return HttpResponse("one")


@http_action
async def two(ctx: Any, request: HttpRequest) -> HttpResponse:
    return HttpResponse("two")


@http_action
async def three(ctx: Any, request: HttpRequest) -> HttpResponse:
    return HttpResponse("three")


def test_methods_are_convexs() -> None:
    assert ROUTABLE_HTTP_METHODS == ("GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")
    router = HttpRouter()
    for method in ROUTABLE_HTTP_METHODS:
        router.route(path="/x", method=method, handler=one)
    for method in ("HEAD", "CONNECT", "TRACE", "get", "FETCH"):
        with pytest.raises(EngineError, match=rf"'{method}' is not an allowed HTTP method"):
            router.route(path="/y", method=method, handler=one)
    with pytest.raises(EngineError, match="route requires method"):
        router.route(path="/y", method="", handler=one)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"path": "x"}, "path 'x' does not start with a /"),
        ({"path": ""}, "path '' does not start with a /"),
        ({"path_prefix": "x/"}, "pathPrefix 'x/' does not start with a /"),
        ({"path_prefix": "/x"}, "pathPrefix /x must end with a /"),
        ({"path": "/a", "path_prefix": "/a/"}, "cannot contain both 'path' and 'pathPrefix'"),
        ({}, "must contain either field 'path' or 'pathPrefix'"),
        ({"path": "/.files"}, "path '/.files' is reserved"),
        ({"path": "/.files/x"}, "path '/.files/x' is reserved"),
        ({"path_prefix": "/.files/"}, "pathPrefix '/.files/' is reserved"),
        ({"path": "/api/storage"}, "path '/api/storage' is reserved"),
        ({"path": "/api/storage/upload"}, "is reserved: convexlite answers file downloads"),
        ({"path_prefix": "/api/storage/"}, "pathPrefix '/api/storage/' is reserved"),
        ({"path_prefix": "/api/storage/x/"}, "is reserved"),
        ({"path": 5}, r"route\(path=...\) must be a str"),
    ],
)
def test_bad_routes_are_refused_with_convexs_wording(spec: dict[str, Any], message: str) -> None:
    router = HttpRouter()
    with pytest.raises(EngineError, match=message):
        router.route(method="GET", handler=one, **spec)
    assert router.routes() == []


def test_paths_next_to_reserved_ones_are_fine() -> None:
    router = HttpRouter()
    for path in ("/.filesx", "/api/storagex", "/api/other", "/api"):
        router.route(path=path, method="GET", handler=one)
    for prefix in ("/api/", "/", "/.filesx/"):  # may cover storage paths: storage answers first
        router.route(path_prefix=prefix, method="GET", handler=one)


def test_duplicates_are_refused() -> None:
    router = HttpRouter()
    router.route(path="/a", method="GET", handler=one)
    router.route(path="/a", method="POST", handler=one)  # another method: fine
    with pytest.raises(EngineError, match="Path '/a' for method GET already in use"):
        router.route(path="/a", method="GET", handler=two)
    router.route(path_prefix="/a/", method="GET", handler=one)
    with pytest.raises(EngineError, match="GET pathPrefix /a/ is already defined"):
        router.route(path_prefix="/a/", method="GET", handler=two)
    assert router.lookup("/a", "GET") == (one, "GET", "/a")


def test_handlers_must_be_http_actions() -> None:
    async def bare(ctx: Any, request: Any) -> Any:
        return HttpResponse()

    router = HttpRouter()
    with pytest.raises(EngineError, match="decorate the handler with @http_action"):
        router.route(path="/a", method="GET", handler=bare)  # type: ignore[arg-type]
    with pytest.raises(EngineError, match="route requires handler"):
        router.route(path="/a", method="GET", handler=None)  # type: ignore[arg-type]
    with pytest.raises(EngineError, match="must be `async def handler"):
        http_action(lambda ctx, request: HttpResponse())
    with pytest.raises(EngineError, match="cannot be called directly"):
        one(None, None)
    assert isinstance(one, HttpAction) and one.handler.__name__ == "one"
    assert http_action(one).handler is one.handler  # wrapping twice is harmless


def test_exact_paths_win_then_the_longest_prefix() -> None:
    router = HttpRouter()
    # Shorter prefix first: Convex sorts by length at lookup, so order does not matter.
    router.route(path_prefix="/a/", method="GET", handler=one)
    router.route(path_prefix="/a/b/", method="GET", handler=two)
    router.route(path="/a/b/c", method="GET", handler=three)
    assert router.lookup("/a/b/c", "GET") == (three, "GET", "/a/b/c")
    assert router.lookup("/a/b/cd", "GET") == (two, "GET", "/a/b/*")
    assert router.lookup("/a/b/", "GET") == (two, "GET", "/a/b/*")
    assert router.lookup("/a/b", "GET") == (one, "GET", "/a/*")  # "/a/b" is not under "/a/b/"
    assert router.lookup("/a/", "GET") == (one, "GET", "/a/*")
    assert router.lookup("/a", "GET") is None  # a prefix never matches its own path minus "/"
    assert router.lookup("/b", "GET") is None
    assert router.lookup("/a/b/c", "POST") is None  # routes are per method
    other = HttpRouter()
    other.route(path_prefix="/a/b/", method="GET", handler=two)
    other.route(path_prefix="/a/", method="GET", handler=one)
    assert other.lookup("/a/b/x", "GET") == (two, "GET", "/a/b/*")


def test_head_is_looked_up_as_get() -> None:
    router = HttpRouter()
    router.route(path="/a", method="GET", handler=one)
    router.route(path_prefix="/p/", method="GET", handler=two)
    assert router.lookup("/a", "HEAD") == (one, "GET", "/a")
    assert router.lookup("/p/x", "HEAD") == (two, "GET", "/p/*")
    assert router.lookup("/a", "TRACE") is None


def test_routes_lists_exact_paths_then_prefixes_sorted() -> None:
    router = HttpRouter()
    router.route(path="/b", method="POST", handler=one)
    router.route(path="/b", method="GET", handler=two)
    router.route(path="/a", method="GET", handler=one)
    router.route(path_prefix="/z/", method="PUT", handler=three)
    router.route(path_prefix="/y/", method="GET", handler=three)
    assert [(path, method) for path, method, _ in router.routes()] == [
        ("/a", "GET"),
        ("/b", "GET"),
        ("/b", "POST"),
        ("/y/*", "GET"),
        ("/z/*", "PUT"),
    ]
    assert repr(router) == "<HttpRouter with 5 routes>"
