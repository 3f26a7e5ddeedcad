"""The request and response of an HTTP action: :class:`HttpRequest`, :class:`HttpResponse`,
and the case-insensitive :class:`Headers` both carry.

They play the part of the Fetch API's ``Request`` and ``Response`` in a Convex
``httpAction``, with one difference: the request body is read in full before the
handler runs (bounded by the server's ``max_upload_size``), so ``request.body``,
``request.text()`` and ``request.json()`` are plain, not awaitable::

    @http_action
    async def echo(ctx, request):
        data = request.json()                      # parsed from request.body
        return HttpResponse.json({"got": data, "from": request.headers.get("user-agent")})

Responses are whole bodies (``bytes`` or ``str``), not streams.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol, overload
from urllib.parse import parse_qs, urlsplit

from .errors import EngineError

__all__ = [
    "Headers",
    "HttpRequest",
    "HttpResponse",
    "escape_raw_path",
    "normalize_path",
    "normalize_url",
]

HeadersInit = Mapping[str, str] | Iterable[tuple[str, str]] | None

#: Characters an HTTP token (a header name) may have (RFC 9110 section 5.6.2).
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


_SINGLE_DOT = frozenset({".", "%2e"})
_DOUBLE_DOT = frozenset({"..", ".%2e", "%2e.", "%2e%2e"})
#: Bytes a WHATWG URL parser escapes in a path (its path percent-encode set, bar "#" and
#: "?", which end a path) and in a query (its special-query set, bar "#"). A "%" stays.
_PATH_ESCAPED = frozenset(b' "<>`{}') | frozenset(range(0x20)) | frozenset(range(0x7F, 0x100))
_QUERY_ESCAPED = frozenset(b" \"<>'") | frozenset(range(0x20)) | frozenset(range(0x7F, 0x100))


def normalize_path(path: str) -> str:
    """A URL path as a WHATWG URL parser leaves it (Convex's ``new URL(url).pathname``):
    ``\\`` read as ``/``, and the dot segments ``.`` and ``..`` (``%2e`` spelled or not)
    resolved, never above the root.

    ``"/a/./b/../c"`` is ``"/a/c"``, ``"/a/.."`` is ``"/"``, ``"/../x"`` is ``"/x"``;
    empty segments (``"//x"``) are kept. Cost: one split when the path has a dot or a
    backslash, else none.
    """
    if "." not in path and "\\" not in path and "%2e" not in path.lower():
        return path
    segments = path.replace("\\", "/").split("/")
    leading = segments[0]  # "" for a path that starts with "/"
    kept: list[str] = []
    last = len(segments) - 1
    for number, segment in enumerate(segments[1:], 1):
        lowered = segment.lower()
        if lowered in _DOUBLE_DOT:
            if kept:
                kept.pop()
            if number == last:
                kept.append("")
        elif lowered in _SINGLE_DOT:
            if number == last:
                kept.append("")
        else:
            kept.append(segment)
    if not kept and len(segments) == 1:
        return path
    return "/".join([leading, *kept])


def normalize_url(url: str) -> str:
    """``url`` with its path normalized as :func:`normalize_path` does (query kept)."""
    split = urlsplit(url)
    path = normalize_path(split.path)
    return url if path == split.path else split._replace(path=path).geturl()


def escape_raw_path(target: bytes) -> str:
    """A request line's target, its bytes outside URL syntax escaped as a WHATWG parser
    escapes them (UTF-8 and other non-ASCII bytes, controls, space, and ``"<>`{}`` in the
    path, ``"<>'`` in the query): ``b"/caf\\xc3\\xa9"`` is ``"/caf%C3%A9"``."""
    path, mark, query = target.partition(b"?")
    escaped = "".join(f"%{byte:02X}" if byte in _PATH_ESCAPED else chr(byte) for byte in path)
    if mark:
        escaped += "?" + "".join(
            f"%{byte:02X}" if byte in _QUERY_ESCAPED else chr(byte) for byte in query
        )
    return escaped


class Headers(Mapping[str, str]):
    """HTTP headers: a read-only mapping with case-insensitive names, in arrival order.

    A name sent several times reads as its values joined by ``", "`` (as the Fetch
    API's ``Headers.get``); :meth:`get_all` returns them one by one (``Set-Cookie``).
    Iteration yields each name once, lowercased.

    Example::

        headers = Headers([("Content-Type", "text/plain"), ("X-Tag", "a"), ("x-tag", "b")])
        headers["content-type"]     # 'text/plain'
        headers["X-TAG"]            # 'a, b'
        headers.get_all("x-tag")    # ['a', 'b']

    Cost: a lookup is a scan of the pairs (a request has a few dozen at most).
    Raises :class:`EngineError` for a name that is not an HTTP token, or a value with
    a line break or another control character (it would split the header).
    """

    __slots__ = ("_pairs",)

    _pairs: list[tuple[str, str]]

    def __init__(self, init: HeadersInit = None) -> None:
        if init is None:
            pairs: list[tuple[str, str]] = []
        elif isinstance(init, Headers):
            pairs = list(init._pairs)
        elif isinstance(init, Mapping):
            pairs = [(str(k), str(v)) for k, v in init.items()]
        else:
            try:
                pairs = [(str(k), str(v)) for k, v in init]
            except (TypeError, ValueError):  # not iterable, or items that are not pairs
                raise EngineError(
                    f"headers must be a mapping or (name, value) pairs, got {init!r}"
                ) from None
        for name, value in pairs:
            _check_header(name, value)
        self._pairs = pairs

    def __getitem__(self, name: str) -> str:
        values = self.get_all(name)
        if not values:
            raise KeyError(name)
        return ", ".join(values)

    def get_all(self, name: str) -> list[str]:
        """Every value of header ``name`` (any case), in order; ``[]`` if absent."""
        key = name.lower()
        return [v for k, v in self._pairs if k.lower() == key]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = name.lower()
        return any(k.lower() == key for k, _ in self._pairs)

    def __iter__(self) -> Iterator[str]:
        seen: dict[str, None] = {}
        for name, _ in self._pairs:
            seen.setdefault(name.lower())
        return iter(seen)

    def __len__(self) -> int:
        return len({name.lower() for name, _ in self._pairs})

    def pairs(self) -> list[tuple[str, str]]:
        """The headers as sent or given: ``(name, value)`` pairs, names as spelled."""
        return list(self._pairs)

    def __repr__(self) -> str:
        return f"Headers({self._pairs!r})"


def _check_header(name: str, value: str) -> None:
    if not name or not _TOKEN.issuperset(name):
        raise EngineError(
            f"{name!r} is not a valid HTTP header name (letters, digits, !#$%&'*+-.^_`|~)."
        )
    if any((c < " " and c != "\t") or c == "\x7f" for c in value):
        raise EngineError(
            f"The value of header {name!r} contains a line break or control character: "
            f"{value!r}. Header values are one line of text."
        )
    if not value.isascii() and any(c > "\xff" for c in value):
        raise EngineError(
            f"The value of header {name!r} has a character outside Latin-1: {value!r}. "
            "HTTP header values are bytes (Fetch's ByteString): percent-encode the text, "
            "or put it in the body."
        )


class HttpRequest:
    """An HTTP request as an HTTP action receives it.

    ``method`` (upper case; ``HEAD`` requests reach the handler as ``"HEAD"`` on the
    route of ``GET``), ``url`` (absolute: ``http://host/path?query``), ``path`` (the
    routed path, percent-escapes kept, as Convex's ``new URL(url).pathname``; behind
    ``wsgi_app`` the path after the mount point),
    ``query`` (the raw query string), ``query_params`` (first value of each name),
    ``query_lists`` (every value), ``headers`` (:class:`Headers`), ``body`` (``bytes``,
    empty for ``GET``, ``HEAD`` and ``OPTIONS``).

    Example::

        request = HttpRequest("POST", "http://127.0.0.1:3210/notes?tag=a",
                              headers={"Content-Type": "application/json"}, body=b'{"x": 1}')
        request.path, request.query_params, request.json()
        # ('/notes', {'tag': 'a'}, {'x': 1})

    Raises :class:`EngineError` for a ``method``, ``url`` or ``path`` that is no str, a
    ``url`` that does not parse, a ``body`` that is not bytes or str, or bad headers.
    """

    __slots__ = ("body", "headers", "method", "path", "query", "url")

    def __init__(
        self,
        method: str,
        url: str,
        *,
        headers: HeadersInit = None,
        body: bytes | bytearray | memoryview | str = b"",
        path: str | None = None,
    ) -> None:
        for name, given in (("method", method), ("url", url)):
            if not isinstance(given, str):
                raise EngineError(f"HttpRequest {name} must be a str, got {given!r}")
        if path is not None and not isinstance(path, str):
            raise EngineError(f"HttpRequest path must be a str or None, got {path!r}")
        if not isinstance(body, bytes | bytearray | memoryview | str):
            # bytes(5) would be five zero bytes, bytes({...}) a bare TypeError.
            hint = " (json.dumps(...) it first)" if isinstance(body, dict | list) else ""
            raise EngineError(
                f"HttpRequest(body=...) takes bytes, str, bytearray or memoryview, got "
                f"{type(body).__name__}{hint}"
            )
        self.method = method.upper()
        try:
            # Dot segments resolved, as in the URL Convex builds (Rust's url::Url).
            self.url = url = normalize_url(url)
            split = urlsplit(url)
        except ValueError as error:  # "http://[bad": an unparsable authority
            raise EngineError(f"HttpRequest url {url!r} is not a valid URL: {error}") from None
        # The routed path: the URL's, unless a front end mounted under a prefix says
        # otherwise (WSGI's PATH_INFO), as Convex routes on its ``requestRoute``.
        self.path = normalize_path(path) if path is not None else (split.path or "/")
        self.query = split.query
        self.headers = headers if isinstance(headers, Headers) else Headers(headers)
        self.body = _utf8(body) if isinstance(body, str) else bytes(body)

    @property
    def query_params(self) -> dict[str, str]:
        """The first value of each query parameter (``URLSearchParams.get``)."""
        return {name: values[0] for name, values in self.query_lists.items()}

    @property
    def query_lists(self) -> dict[str, list[str]]:
        """Every value of each query parameter, in order (``URLSearchParams.getAll``)."""
        return parse_qs(self.query, keep_blank_values=True)

    def text(self) -> str:
        """The body decoded as UTF-8, as Fetch's ``text()`` decodes it: a leading BOM
        dropped, invalid bytes as U+FFFD."""
        return _utf8_decode(self.body)

    def json(self) -> Any:
        """The body, decoded as :meth:`text` decodes it, parsed as JSON; raises
        ``ValueError`` (``json.JSONDecodeError``) if it is not JSON, ``NaN`` and
        ``Infinity`` included (as Fetch's ``json()``)."""
        return json.loads(_utf8_decode(self.body), parse_constant=_not_json)

    def __repr__(self) -> str:
        return f"<HttpRequest {self.method} {self.url} ({len(self.body)} bytes)>"


def _utf8_decode(body: bytes) -> str:
    """``body`` as the Encoding standard's "UTF-8 decode" reads it (Fetch's ``text()`` and
    ``json()``): one leading BOM dropped, invalid bytes as U+FFFD. Python's
    ``json.loads(bytes)`` would instead guess UTF-16 or UTF-32 from the first bytes, and
    raise on invalid UTF-8."""
    return body.removeprefix(b"\xef\xbb\xbf").decode("utf-8", errors="replace")


def _utf8(text: str) -> bytes:
    """``text`` in UTF-8, a lone surrogate (which UTF-8 cannot hold) as U+FFFD: Fetch's
    string bodies are USVStrings."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text).encode()


_SURROGATE = re.compile("[\ud800-\udfff]")


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON (JSON has no NaN or infinities)")


#: The content type Fetch's ``Response`` gives a string body.
TEXT_PLAIN = "text/plain;charset=UTF-8"
#: Statuses whose responses have no body (Fetch's "null body status").
NULL_BODY_STATUSES = frozenset({101, 103, 204, 205, 304})


class _BuildJson(Protocol):
    def __call__(
        self, data: Any, *, status: int = 200, headers: HeadersInit = None
    ) -> HttpResponse: ...


class _ReadJson(Protocol):
    def __call__(self) -> Any: ...


def _build_json(
    cls: type[HttpResponse], data: Any, *, status: int = 200, headers: HeadersInit = None
) -> HttpResponse:
    given = Headers(headers)
    pairs = given.pairs()
    if "content-type" not in given:
        pairs.append(("Content-Type", "application/json"))
    return cls(json.dumps(data, allow_nan=False).encode(), status=status, headers=pairs)


class _JsonMethod:
    """``HttpResponse.json``, both of Fetch's ``json``s.

    On the class, ``HttpResponse.json(data, *, status=200, headers=None)`` builds a JSON
    answer (``Content-Type: application/json`` unless given), as ``Response.json(data)``:
    ``TypeError`` for a value JSON cannot hold (bytes), ``ValueError`` for NaN or an
    infinity (JSON has none; convert them first). On a response, ``response.json()``
    parses its body, as ``await response.json()`` on what convex-test's ``t.fetch``
    returns (``ValueError`` if it is not JSON, ``NaN`` and ``Infinity`` included).
    """

    @overload
    def __get__(self, instance: None, owner: type[HttpResponse]) -> _BuildJson: ...

    @overload
    def __get__(
        self, instance: HttpResponse, owner: type[HttpResponse] | None = None
    ) -> _ReadJson: ...

    def __get__(
        self, instance: HttpResponse | None, owner: type[HttpResponse] | None = None
    ) -> _BuildJson | _ReadJson:
        if instance is None:
            assert owner is not None
            return functools.partial(_build_json, owner)
        response = instance

        def read(*args: Any, **kwargs: Any) -> Any:
            if args or kwargs:
                raise TypeError(
                    "response.json() takes no arguments: it reads the response's body; "
                    "to build a JSON response call the class, HttpResponse.json(data)"
                )
            return json.loads(_utf8_decode(response.body), parse_constant=_not_json)

        return read


class HttpResponse:
    """What an HTTP action returns: a body, a status and headers.

    ``body``: ``bytes`` (sent as is), ``str`` (UTF-8; ``Content-Type:
    text/plain;charset=UTF-8`` unless given, as Fetch's ``Response``) or ``None``
    (empty). ``status``: 200 to 599 (Fetch's range; anything else raises
    :class:`EngineError`). ``headers``: a mapping or ``(name, value)`` pairs
    (repeat a name for several values). The server sets ``Content-Length`` itself.
    :attr:`json` builds a JSON answer (``HttpResponse.json(data)``), and on a response
    reads its body (``response.json()``, for tests reading an answer of ``Engine.fetch``).

    Example::

        return HttpResponse("created", status=201, headers={"Location": "/notes/1"})
        return HttpResponse.json({"ok": True})
        return HttpResponse(png_bytes, headers={"Content-Type": "image/png"})
    """

    __slots__ = ("body", "headers", "status")

    def __init__(
        self,
        body: bytes | bytearray | memoryview | str | None = None,
        *,
        status: int = 200,
        headers: HeadersInit = None,
    ) -> None:
        if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
            raise EngineError(
                f"HttpResponse(status=...) must be an int from 200 to 599, got {status!r}"
            )
        self.status = status
        self.headers = Headers(headers)
        if body is None:
            self.body = b""
        elif isinstance(body, str):
            self.body = _utf8(body)
            if "content-type" not in self.headers:
                self.headers = Headers([*self.headers.pairs(), ("Content-Type", TEXT_PLAIN)])
        elif isinstance(body, bytes | bytearray | memoryview):
            self.body = bytes(body)
        else:
            raise EngineError(
                f"HttpResponse(body=...) takes bytes, str or None, got {type(body).__name__}: "
                "for a JSON answer use HttpResponse.json(value)."
            )
        if self.body and status in NULL_BODY_STATUSES:
            raise EngineError(
                f"Response with null body status cannot have body: status {status} never "
                "carries a body (Fetch's rule); return HttpResponse(None, status=...)."
            )

    def text(self) -> str:
        """The body decoded as UTF-8, as Fetch's ``text()`` (for tests reading an answer
        of ``Engine.fetch``)."""
        return _utf8_decode(self.body)

    def __repr__(self) -> str:
        return f"<HttpResponse {self.status} ({len(self.body)} bytes)>"

    json = _JsonMethod()
