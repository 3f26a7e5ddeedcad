"""The head of a request as :class:`~engine.httpserver.HttpServer` reads it off a socket:
the request line and the header section, checked as RFC 9112 asks.

The standard library's ``http.server`` reads them leniently, where leniency lets a proxy
in front and this server disagree on where a request ends (request smuggling): a
header line it cannot parse (no colon, a space in the name or before the colon, a NUL)
silently ended the header section, so the ``Content-Length`` after it was dropped and
the body was read as the next request; a bare CR split one header into two; a line
starting with ``From `` vanished; a request line without a version (HTTP/0.9) was
answered with no status line. :func:`_read_head` refuses each of these with a 400 (a
version other than HTTP/1.x with a 505), which the server sends before closing the
connection. Empty lines before a request line are skipped (RFC 9112 §2.2), up to
:data:`_EMPTY_LINES`. A head too large is a 414 or 431: a request line over 64 KiB,
a header line over 64 KiB, more than 100 header lines, or header lines over
:data:`_MAX_HEADER_BYTES` (408 KiB) together.

Cost: one regular-expression match per header line, besides the standard library's
parsing of the checked lines into an :class:`http.client.HTTPMessage`.
"""

from __future__ import annotations

import email.parser
import re
from collections.abc import Callable
from http.client import HTTPMessage
from typing import NamedTuple

from .httpresponses import Response, _error

__all__: list[str] = []

#: The longest request or header line taken, and the most header lines (``http.client``'s).
_MAX_LINE = 65536
_MAX_HEADERS = 100
#: The most bytes the header lines may have together: hyper's read buffer limit
#: (``8192 + 4096 * 100``, the server Convex runs), past which it answers 431. Each line
#: and the count alone let one head carry 6.5 MB (100 lines of 64 KiB).
_MAX_HEADER_BYTES = 8192 + 4096 * 100
#: Empty lines skipped before a request line (a client may send one after a body).
_EMPTY_LINES = 8
_EMPTY = (b"\r\n", b"\n")
# RFC 9112 §5: field-name ":" OWS field-value OWS, the name a token right before the
# colon. A value may not hold CR, LF or NUL (RFC 9110 §5.5); a line may end in a bare LF
# (RFC 9112 §2.2 lets a recipient take one), never in a bare CR.
_FIELD_LINE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\r\n\x00]*\r?\n")
_VERSION = re.compile(rb"HTTP/([0-9])\.[0-9]")


class _Head(NamedTuple):
    """A request line and header section that passed the checks."""

    method: str
    target: str  # as sent (Latin-1): http.server's ``path`` folds a leading "//"
    version: str  # "HTTP/1.1" or "HTTP/1.0"
    headers: HTTPMessage


def _read_head(line: bytes, readline: Callable[[int], bytes]) -> _Head | Response | None:
    """The head of the request whose first line is ``line``, reading the rest with
    ``readline(limit)``; the answer refusing it (400, 414, 431 or 505); or None when
    the client closed the connection before a request line."""
    for _ in range(_EMPTY_LINES):
        if line not in _EMPTY:
            break
        line = readline(_MAX_LINE + 1)
    else:
        if line in _EMPTY:
            return _error(400, "BadRequest", "More than 8 empty lines before the request line.")
    if not line:
        return None
    if len(line) > _MAX_LINE:
        return _error(414, "UriTooLong", f"The request line is longer than {_MAX_LINE} bytes.")
    # Split on ASCII whitespace only (RFC 9112 §3): str.split() would also split the
    # Latin-1 reading of a UTF-8 path at \x85 or \xa0 ("/\xc3\x85" is "/Å").
    words = line.split()
    if len(words) != 3:
        shown = line.rstrip(b"\r\n")[:100].decode("latin-1")
        hint = " (an HTTP/0.9 request, not served)" if len(words) == 2 else ""
        return _error(
            400,
            "BadRequest",
            f"The request line {shown!r} is not 'METHOD target HTTP/1.1'{hint}.",
        )
    method, target, version = words
    match = _VERSION.fullmatch(version)
    if match is None:
        return _error(
            400, "BadRequest", f"{version[:40].decode('latin-1')!r} is not an HTTP version."
        )
    if match[1] != b"1":
        return _error(
            505,
            "HttpVersionNotSupported",
            f"{version.decode()} is not served: send HTTP/1.1 (or HTTP/1.0).",
        )
    headers = _read_headers(readline)
    if isinstance(headers, Response):
        return headers
    return _Head(method.decode("latin-1"), target.decode("latin-1"), version.decode(), headers)


def _read_headers(readline: Callable[[int], bytes]) -> HTTPMessage | Response:
    """The header section up to its empty line, each line checked before
    :mod:`email.parser` reads them (it splits a line at a bare CR and stops at a line
    it cannot read, both without a word)."""
    lines = []
    total = 0
    while True:
        line = readline(_MAX_LINE + 1)
        if len(line) > _MAX_LINE:
            return _error(431, "HeaderTooLarge", f"A header line is longer than {_MAX_LINE} bytes.")
        if line in _EMPTY:
            break
        total += len(line)
        if total > _MAX_HEADER_BYTES:
            return _error(
                431,
                "HeaderTooLarge",
                f"The request's header lines have more than {_MAX_HEADER_BYTES} bytes "
                "together: send large data in the body.",
            )
        if _FIELD_LINE.fullmatch(line) is None:
            return _error(400, "BadRequest", _why(line))
        lines.append(line)
        if len(lines) > _MAX_HEADERS:
            return _error(
                431, "HeaderTooLarge", f"The request has more than {_MAX_HEADERS} headers."
            )
    text = b"".join(lines).decode("latin-1") + "\r\n"
    headers = email.parser.Parser(_class=HTTPMessage).parsestr(text)
    if headers.defects:  # none once every line passed: kept so that a gap cannot hide
        return _error(400, "BadRequest", f"The header section is malformed: {headers.defects[0]}.")
    return headers


def _why(line: bytes) -> str:
    """What is wrong with a header line that failed the check."""
    if not line:
        return "The request ended before the empty line that ends its header section."
    body = line.removesuffix(b"\n").removesuffix(b"\r")
    shown = repr(body[:100].decode("latin-1"))
    if b"\r" in body:
        return f"The header line {shown} has a CR not followed by LF (RFC 9112 section 2.2)."
    if b"\x00" in body:
        return f"The header line {shown} has a NUL (RFC 9110 section 5.5)."
    if not line.endswith(b"\n"):
        return "The request ended before the empty line that ends its header section."
    if line[:1] in (b" ", b"\t"):
        return f"The header line {shown} is folded onto the previous one (RFC 9112 section 5.2)."
    return (
        f"The header line {shown} is not 'Name: value' (RFC 9112 section 5: a token, then a colon)."
    )
