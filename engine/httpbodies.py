"""Reading a request body for the HTTP endpoints: its ``Content-Length`` checked, its
bytes read in pieces; or a chunked body decoded (:func:`_read_chunked`).

An upload or an HTTP action's body is read in full and held in memory: ``_body``
answers 411 without a ``Content-Length``, 400 for a length that is not a number or a
body that ends early, 413 above the cap (:data:`DEFAULT_MAX_UPLOAD_SIZE`, 256 MiB, or
the server's ``max_upload_size``; for an HTTP action's body, Convex's 20 MiB if that is
smaller). It is read 1 MiB at a time (``_PIECE``), so a declared length is never
allocated up front. A chunked body (``Transfer-Encoding: chunked``) is decoded
strictly (:func:`_read_chunked`): sizes in hex on lines that end in CRLF, each chunk's
data followed by CRLF, extensions and trailers read and ignored; anything else is a 400,
and the connection closes, since where the next request starts is then unknown.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from . import httpactions
from .httphead import _FIELD_LINE, _MAX_LINE
from .httpresponses import Response, _error

__all__ = ["DEFAULT_MAX_UPLOAD_SIZE"]

#: Bytes an upload may have (it is held in memory until stored): larger ones get 413.
DEFAULT_MAX_UPLOAD_SIZE = 256 << 20
_PIECE = 1 << 20  # upload bodies are read this many bytes at a time


def _body(
    header: Callable[[str], str | None],
    read_body: Callable[[int], bytes],
    max_size: int,
    what: str,
    *,
    optional: bool = False,
    read_all: Callable[[int], bytes | Response | None] | None = None,
) -> bytes | Response:
    """The request body, or the error answer: 411 without ``Content-Length`` (unless
    ``optional`` and the request announces no body at all, or the server can read a
    body of unknown length to its end: ``read_all(n)``, None past ``n`` bytes, or the
    answer refusing it), 400 for a bad length or a body that ends early, 413 above
    ``max_size``."""
    value = header("Content-Length")
    if value is None:
        if optional and header("Transfer-Encoding") is None:
            return b""
        if read_all is not None and header("Transfer-Encoding") is not None:
            data = read_all(max_size)  # read now: only a request that will be served
            if isinstance(data, Response):
                return data
            if data is None:
                return _error(
                    413, "PayloadTooLarge", _too_large(max_size + 1, max_size, what, more=True)
                )
            return data
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


def _too_large(length: int, max_size: int, what: str, *, more: bool = False) -> str:
    """The 413 message for a body of ``length`` bytes over ``max_size`` (``more``: of
    unknown length, known to be longer): Convex's 20 MiB limit when that is the cap (an
    HTTP action's body), else the server's."""
    if what == "The request body" and max_size == httpactions.BODY_LIMIT and not more:
        return httpactions.too_large(length)
    has = f"more than {max_size}" if more else str(length)
    return (
        f"{what} has {has} bytes; this server takes at most {max_size} "
        "(serve_http(max_upload_size=...), wsgi_app(max_upload_size=...))."
    )


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


#: The longest chunk-size line taken (a size and its extensions), and the most bytes the
#: trailer lines may have together.
_MAX_CHUNK_LINE = 4096
_MAX_TRAILER_BYTES = 64 << 10
# RFC 9112 7.1: chunk-size (hex), then extensions (";" name ["=" value]), then CRLF; a
# bare LF is refused here, as a proxy that took it could frame the body otherwise.
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:[ \t]*;[^\r\n\x00]*)?\r\n")


def _read_chunked(
    readline: Callable[[int], bytes], read: Callable[[int], bytes], max_size: int
) -> bytes | Response | None:
    """A chunked request body (RFC 9112 section 7.1) decoded from a connection, read to
    its end (its trailer section included); None once it has more than ``max_size``
    bytes (a 413); a 400 answer for a body that is not chunked coding, ends early, or
    stalls past the socket's timeout. Only a whole body leaves the connection where the
    next request starts. Cost: one line read per chunk, its data read in 1 MiB pieces.
    """
    parts: list[bytes] = []
    size = 0
    try:
        while True:
            line = readline(_MAX_CHUNK_LINE + 1)
            if not line:
                return _incomplete()
            match = _CHUNK_LINE.fullmatch(line)
            if match is None:
                shown = repr(line[:40].decode("latin-1"))
                return _error(
                    400,
                    "BadChunkedBody",
                    f"The chunked body has {shown} where a chunk size line belongs (hex "
                    "digits, optional ';' extensions, then CRLF: RFC 9112 section 7.1).",
                )
            length = int(match[1], 16)
            if length == 0:
                break
            size += length
            if size > max_size:
                return None
            data = _read_all(read, length)
            if data is None:
                return _incomplete()
            parts.append(data)
            end = _read_all(read, 2)
            if end is None:
                return _incomplete()
            if end != b"\r\n":
                return _error(
                    400,
                    "BadChunkedBody",
                    f"A chunk of the chunked body is followed by {end!r}, not CRLF: its "
                    "size line gave the wrong length (RFC 9112 section 7.1).",
                )
        total = 0
        while (line := readline(_MAX_LINE + 1)) != b"\r\n":
            if not line:
                return _incomplete()
            total += len(line)
            if (
                total > _MAX_TRAILER_BYTES
                or not line.endswith(b"\r\n")
                or _FIELD_LINE.fullmatch(line) is None
            ):
                return _error(
                    400,
                    "BadChunkedBody",
                    f"The chunked body's trailer section is not 'Name: value' lines "
                    f"ending in CRLF, of at most {_MAX_TRAILER_BYTES} bytes together "
                    "(RFC 9112 section 7.1.2).",
                )
    except OSError:  # TimeoutError included: the client stalled
        return _incomplete()
    return b"".join(parts)


def _incomplete() -> Response:
    return _error(400, "IncompleteBody", "The chunked body ended before its last chunk.")
