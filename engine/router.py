"""HTTP actions and their router: :func:`http_action` and :class:`HttpRouter`.

An HTTP action is an ``async def handler(ctx, request)`` that answers an HTTP request
with an :class:`~engine.HttpResponse`; ``ctx`` is an :class:`~engine.ActionCtx`. A
router maps paths and methods to HTTP actions, as Convex's ``convex/http.ts``::

    # myapp/functions/http.py: the router is the attribute ``http`` of module ``http``
    from engine import HttpResponse, HttpRouter, http_action

    @http_action
    async def post_note(ctx, request):
        note_id = await ctx.run_mutation("notes:add", {"text": request.json()["text"]})
        return HttpResponse.json({"id": note_id}, status=201)

    http = HttpRouter()
    http.route(path="/notes", method="POST", handler=post_note)
    http.route(path_prefix="/files/", method="GET", handler=get_file)

Routing follows Convex's ``HttpRouter`` (convex-js ``src/server/router.ts``):

- methods are ``GET POST PUT DELETE OPTIONS PATCH``; a ``HEAD`` request is routed as
  ``GET`` and answered without its body;
- ``path`` must start with ``/``; ``path_prefix`` must start and end with ``/`` and
  matches every path that starts with it (``/files/`` matches ``/files/`` and
  ``/files/a/b``, not ``/files``);
- one handler per (path, method) and per (prefix, method);
- an exact path wins over any prefix, and the longest matching prefix wins;
- ``/.files`` is reserved (as in Convex), and so is ``/api/storage`` with everything
  under it: the engine answers file downloads and uploads there.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any, Literal

from .errors import EngineError

__all__ = ["ROUTABLE_HTTP_METHODS", "HttpAction", "HttpRouter", "http_action", "router_of_module"]

RoutableMethod = Literal["GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"]
#: The methods a route may take, as Convex's ``ROUTABLE_HTTP_METHODS``; ``HEAD`` is
#: served by the ``GET`` route (CONNECT and TRACE are not supported, as in Convex).
ROUTABLE_HTTP_METHODS: tuple[RoutableMethod, ...] = (
    "GET",
    "POST",
    "PUT",
    "DELETE",
    "OPTIONS",
    "PATCH",
)
#: Where the storage endpoints live: no route may be defined at or under it.
STORAGE_PATH = "/api/storage"


class HttpAction:
    """An HTTP action: an ``async def handler(ctx, request)`` made routable by
    :func:`http_action`. Route it with :meth:`HttpRouter.route`; the handler stays
    reachable as ``.handler`` for unit tests.
    """

    __slots__ = ("__dict__", "handler")

    handler: Callable[[Any, Any], Awaitable[Any]]

    def __init__(self, handler: Callable[[Any, Any], Awaitable[Any]]) -> None:
        if isinstance(handler, HttpAction):
            handler = handler.handler
        if not inspect.iscoroutinefunction(handler):
            raise EngineError(
                f"HTTP action handler {getattr(handler, '__qualname__', handler)!r} must be "
                "`async def handler(ctx, request)`, as Convex's httpAction handlers are async."
            )
        self.handler = handler
        self.__doc__ = handler.__doc__
        self.__wrapped__ = handler

    def __repr__(self) -> str:
        return f"<http_action {self.handler.__module__}.{self.handler.__qualname__}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise EngineError(
            f"{self!r} cannot be called directly: route it with HttpRouter.route(...) and "
            "call it over HTTP (Engine.serve_http) or with Engine.fetch(path, ...)."
        )


def http_action(handler: Callable[[Any, Any], Awaitable[Any]]) -> HttpAction:
    """Declare an HTTP action (Convex's ``httpAction``): ``async def handler(ctx, request)``.

    ``ctx`` is an :class:`~engine.ActionCtx` (``run_query``, ``run_mutation``,
    ``run_action``, ``storage``, ``scheduler``, ``auth``, ``env``); ``request`` an
    :class:`~engine.HttpRequest`. It returns an :class:`~engine.HttpResponse`. There is
    no argument validation (the request is the argument) and no retry.
    ``ctx.auth.get_user_identity()`` is the identity of the request's ``Authorization:
    Bearer <token>`` header, ``None`` without the header, and raises when the header
    does not verify (as Convex does in HTTP actions).

    Example::

        @http_action
        async def hello(ctx, request):
            who = ctx.auth.get_user_identity()
            return HttpResponse(f"hello {who.name if who else 'stranger'}")

    Raises :class:`EngineError` for a handler that is not ``async def``.
    """
    return HttpAction(handler)


class HttpRouter:
    """The routes of HTTP actions: exact paths and path prefixes, per method.

    Example::

        http = HttpRouter()
        http.route(path="/profile", method="GET", handler=get_profile)         # /profile only
        http.route(path_prefix="/profiles/", method="GET", handler=get_profile)  # /profiles/...
        http.lookup("/profiles/ada", "GET")   # (get_profile, 'GET', '/profiles/*')

    Put it in the functions package as the attribute ``http`` of its module ``http``
    (``myapp/functions/http.py``), or pass it as ``Engine.open(..., http=router)``.
    """

    def __init__(self) -> None:
        self.exact_routes: dict[str, dict[RoutableMethod, HttpAction]] = {}
        self.prefix_routes: dict[RoutableMethod, dict[str, HttpAction]] = {}
        # Longest first, per method; rebuilt by route() (lookups outnumber routes).
        self._prefixes: dict[RoutableMethod, list[tuple[str, HttpAction]]] = {}

    def route(
        self,
        *,
        method: str,
        handler: HttpAction,
        path: str | None = None,
        path_prefix: str | None = None,
    ) -> None:
        """Route ``method`` requests for ``path`` (exactly) or under ``path_prefix`` to ``handler``.

        Raises :class:`EngineError`, with Convex's wording, for: a method other than
        GET, POST, PUT, DELETE, OPTIONS, PATCH (``'HEAD' is not an allowed HTTP method
        (like GET, POST, PUT etc.)``); both or neither of ``path`` and ``path_prefix``;
        a path that does not start with ``/`` or a prefix that does not also end with
        one; a reserved path (``/.files``, ``/api/storage``); a (path, method) or
        (prefix, method) already routed (``Path '/x' for method GET already in use``);
        a handler that is not an :func:`http_action`. Cost: a sort of the method's
        prefixes.
        """
        if handler is None:
            raise EngineError("route requires handler")
        if not isinstance(handler, HttpAction):
            raise EngineError(
                f"route(handler=...) takes an HTTP action, got {handler!r}: decorate the "
                "handler with @http_action (async def handler(ctx, request))."
            )
        if not method:
            raise EngineError("route requires method")
        if method not in ROUTABLE_HTTP_METHODS:
            raise EngineError(
                f"'{method}' is not an allowed HTTP method (like GET, POST, PUT etc.)"
                + (": HEAD requests are served by the GET route" if method == "HEAD" else "")
            )
        routable: RoutableMethod = method
        if path is not None and path_prefix is not None:
            raise EngineError(
                "Invalid httpRouter route: cannot contain both 'path' and 'pathPrefix'"
            )
        if path is not None:
            _check_str("path", path)
            if not path.startswith("/"):
                raise EngineError(f"path '{path}' does not start with a /")
            if _reserved(path) or _reserved(path + "/"):
                raise EngineError(f"path '{path}' is reserved{_WHY_RESERVED}")
            methods = self.exact_routes.setdefault(path, {})
            if routable in methods:
                raise EngineError(f"Path '{path}' for method {routable} already in use")
            methods[routable] = handler
        elif path_prefix is not None:
            _check_str("path_prefix", path_prefix)
            if not path_prefix.startswith("/"):
                raise EngineError(f"pathPrefix '{path_prefix}' does not start with a /")
            if not path_prefix.endswith("/"):
                raise EngineError(f"pathPrefix {path_prefix} must end with a /")
            if _reserved(path_prefix):
                raise EngineError(f"pathPrefix '{path_prefix}' is reserved{_WHY_RESERVED}")
            prefixes = self.prefix_routes.setdefault(routable, {})
            if path_prefix in prefixes:
                raise EngineError(f"{routable} pathPrefix {path_prefix} is already defined")
            prefixes[path_prefix] = handler
            self._prefixes[routable] = sorted(
                prefixes.items(), key=lambda item: len(item[0]), reverse=True
            )
        else:
            raise EngineError(
                "Invalid httpRouter route entry: must contain either field 'path' or 'pathPrefix'"
            )

    def lookup(self, path: str, method: str) -> tuple[HttpAction, RoutableMethod, str] | None:
        """The route of a request: ``(handler, method, routed path)``, or None.

        ``HEAD`` looks up ``GET``. An exact path wins; else the longest matching prefix,
        reported as ``"<prefix>*"`` (Convex's ``lookup``). Cost: a dict lookup, then one
        ``startswith`` per prefix of the method.
        """
        routable: RoutableMethod = "GET" if method == "HEAD" else method  # type: ignore[assignment]
        exact = self.exact_routes.get(path)
        if exact is not None and routable in exact:
            return exact[routable], routable, path
        for prefix, handler in self._prefixes.get(routable, ()):
            if path.startswith(prefix):
                return handler, routable, prefix + "*"
        return None

    def routes(self) -> list[tuple[str, RoutableMethod, HttpAction]]:
        """Every route as ``(path, method, handler)``: exact paths sorted, then prefixes as
        ``"<prefix>*"`` (Convex's ``getRoutes``, what its dashboard lists)."""
        exact = [
            (path, method, self.exact_routes[path][method])
            for path in sorted(self.exact_routes)
            for method in sorted(self.exact_routes[path])
        ]
        prefixed = [
            (prefix + "*", method, self.prefix_routes[method][prefix])
            for method in sorted(self.prefix_routes)
            for prefix in sorted(self.prefix_routes[method])
        ]
        return exact + prefixed

    def __repr__(self) -> str:
        return f"<HttpRouter with {len(self.routes())} routes>"


_WHY_RESERVED = (
    ": convexlite answers file downloads and uploads under /api/storage/, and Convex "
    "reserves /.files"
)


def _reserved(path: str) -> bool:
    """Whether a path (or a prefix, ending in ``/``) lies in a reserved area."""
    return path.startswith(("/.files/", STORAGE_PATH + "/"))


def _check_str(name: str, value: object) -> None:
    if not isinstance(value, str):
        raise EngineError(f"route({name}=...) must be a str such as '/notes', got {value!r}")


def router_of_module(module: ModuleType) -> HttpRouter:
    """The router of a functions package's ``http`` module: its attribute ``http``.

    Raises :class:`EngineError` when the module has no such attribute or it is not an
    :class:`HttpRouter` (Convex: ``convex/http.ts`` must export a router as default).
    """
    router = getattr(module, "http", None)
    if not isinstance(router, HttpRouter):
        found = "nothing" if router is None else f"{type(router).__name__} {router!r}"
        named = sorted(k for k, v in vars(module).items() if isinstance(v, HttpRouter))
        fix = (
            f"Name the router `http` (it is {named[0]!r})."
            if router is None and len(named) == 1
            else "Rename the module if it is not meant to define HTTP routes."
        )
        raise EngineError(
            f"The functions module {module.__name__!r} is where HTTP routes are defined, "
            f"so it must have an attribute `http = HttpRouter()`; found {found}. {fix}"
        )
    return router
