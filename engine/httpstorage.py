"""File storage's HTTP endpoints: downloads and uploads under ``/api/storage/``.

:func:`engine.httphandling.handle` routes requests here (``_download`` and
``_upload``). The storage endpoints are Convex's two:

- ``GET <origin>/api/storage/<storage id>-<signature>`` (a URL from
  ``ctx.storage.get_url``): the file's bytes with its ``Content-Type``,
  ``Content-Length`` and ``Digest: sha-256=<base64>``, and ``Content-Security-Policy:
  sandbox`` (a file opened as a page runs no script on this origin, which is also the
  HTTP actions'); 404 once the file is
  deleted or for a URL this database did not sign. ``HEAD`` as well. Convex's
  ``Cache-Control: private, max-age=2592000``, an ``ETag`` (``304`` for an
  ``If-None-Match`` naming it). One byte
  range (``Range: bytes=...``) gets ``206`` with ``Content-Range``; several, or one
  past the end, ``416``, as in Convex.
- ``POST <origin>/api/storage/upload?token=...`` (a URL from
  ``ctx.storage.generate_upload_url``, valid one hour): stores the request
  body as a new file, with the request's ``Content-Type``; an optional
  ``Digest: sha-256=<base64>`` header is checked. Answers
  ``{"storageId": "..."}``. The body has a ``Content-Length`` or is chunked.

Every storage answer allows any origin (``Access-Control-Allow-Origin: *``), and
``OPTIONS`` (answered by :func:`engine.httphandling.handle`) answers CORS preflights,
so a browser page on another origin can upload and download, as with Convex.

A download reads the file chunk by chunk, each chunk in a short read txn of
its own (a slow client does not pin a snapshot); an upload is read in 1 MiB
pieces and held in memory until it is stored.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from . import blobs, files
from .errors import EngineError, InvalidId, ValidationError
from .httpbodies import _body
from .httpresponses import _CORS, Response, _error, _failed, _json

if TYPE_CHECKING:
    from .functions import Runtime

__all__: list[str] = []  # reached through engine.httphandling.handle

_PREFIX = "/api/storage/"
_UPLOAD = "/api/storage/upload"


def _download(
    runtime: Runtime,
    segment: str,
    *,
    head: bool,
    byte_range: str | None = None,
    if_range: str | None = None,
    if_none_match: str | None = None,
) -> Response:
    db = runtime.db
    storage_id = files.parse_file_url_path(db, segment)
    found = None
    if storage_id is not None:
        try:
            found = files.metadata_and_key(db, storage_id)
        except InvalidId:
            found = None
        except EngineError as error:
            return _failed(db, error)
    if found is None:
        return _error(404, "FileNotFound", "File not found")
    document, doc_key = found
    size = int(document["size"])
    etag = f'"{document["sha256"]}"'
    if if_none_match is not None and _matches(if_none_match, etag):  # before Range
        return Response(304, [_CORS, ("ETag", etag), _CACHE_CONTROL])
    span = None
    if byte_range is not None and (if_range is None or if_range.strip() == etag):
        span = _byte_range(byte_range, size)
    if span == "unsatisfiable":
        return Response(416, [_CORS, ("Content-Range", f"bytes */{size}"), ("Content-Length", "0")])
    start, stop = span if isinstance(span, tuple) else (0, size - 1)
    headers = [_CORS, ("Content-Type", _content_type(document))]
    if isinstance(span, tuple):
        headers.append(("Content-Range", f"bytes {start}-{stop}/{size}"))
    else:  # the digest is of the whole file: a part gets none
        headers.append(("Digest", f"sha-256={document['sha256']}"))
    headers += [
        ("Content-Length", str(stop - start + 1)),
        ("Accept-Ranges", "bytes"),
        ("ETag", etag),
        _CACHE_CONTROL,
        # Files share this origin with the HTTP actions (Convex serves them on another),
        # and an uploader picks the Content-Type: a file opened as a page gets an opaque
        # origin and runs no script, so an uploaded HTML or SVG file cannot act as the
        # app. <img>, <video>, <audio> and downloads are unaffected.
        *_sandbox(document),
    ]
    response = Response(206 if isinstance(span, tuple) else 200, headers)
    if not head:
        response.body = _chunks(db.storage, doc_key, response, start, stop + 1)
    return response


_NOSNIFF = ("X-Content-Type-Options", "nosniff")
#: Convex's (local_backend/storage.rs): a file URL's bytes never change, and only the
#: browser that fetched them keeps them.
_CACHE_CONTROL = ("Cache-Control", "private, max-age=2592000")


def _matches(if_none_match: str, etag: str) -> bool:
    """Whether an ``If-None-Match`` list names ``etag`` (weak comparison) or is ``*``."""
    if if_none_match.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in if_none_match.split(","))


def _sandbox(document: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """``Content-Security-Policy: sandbox`` and ``nosniff`` for a download, but for a PDF
    only ``nosniff``: browsers' PDF viewers do not run in a sandboxed document, and their
    scripts never run on the page's origin anyway."""
    media_type = _content_type(document).partition(";")[0].strip().lower()
    if media_type == "application/pdf":
        return (_NOSNIFF,)
    return (("Content-Security-Policy", "sandbox"), _NOSNIFF)


_RANGE_SPEC = re.compile(r"([0-9]{1,18})-([0-9]{0,18})|-([0-9]{1,18})")


def _byte_range(value: str, size: int) -> tuple[int, int] | str | None:
    """The ``(first, last)`` bytes a ``Range`` header asks of a ``size``-byte file;
    ``"unsatisfiable"`` (416) for a range past the end or several ranges (Convex serves
    one, as S3 does); None for a header that is no byte range (the whole file, 200).
    The unit is matched without regard to case (``Bytes=0-1``), as RFC 9110 14.1 says."""
    unit, equals, ranges = value.strip().partition("=")
    if not equals or unit.lower() != "bytes":
        return None
    specs = [spec.strip() for spec in ranges.split(",")]
    if len(specs) > 1:
        if all(_RANGE_SPEC.fullmatch(spec) for spec in specs):
            return "unsatisfiable"
        return None
    match = _RANGE_SPEC.fullmatch(specs[0])
    if match is None:
        return None
    first, last, suffix = match.groups()
    if suffix is not None:
        length = int(suffix)
        if length == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - length), size - 1
    start = int(first)
    end = size - 1 if not last else int(last)
    if last and end < start:
        return None  # "bytes=9-5" is not a valid range: ignored (RFC 9110 14.1.1)
    if start >= size:
        return "unsatisfiable"
    return start, min(end, size - 1)


def _content_type(document: dict[str, Any]) -> str:
    """The row's content type, if a header can carry it (rows stored before store_file
    required visible ASCII may hold others) and it is not blank (``store_file(data, "")``
    keeps ``""``), else ``application/octet-stream``."""
    value = document.get("contentType")
    if isinstance(value, str) and value.strip() and value.isascii() and value.isprintable():
        return value
    return "application/octet-stream"


def _chunks(
    storage: Any,
    doc_key: bytes,
    response: Response,
    start: int,
    stop: int,
) -> Iterator[bytes]:
    """The file's bytes ``[start, stop)``, one chunk per read txn (none for an empty file:
    its answer is whole, and a delete meanwhile must not close the connection)."""
    if start >= stop:
        return
    first = start // blobs.CHUNK_SIZE
    last = -(-stop // blobs.CHUNK_SIZE)
    for number in range(first, last):
        try:
            with storage.read() as rtxn:  # one short txn per chunk: a slow client pins nothing
                chunk = rtxn.get(blobs.chunk_key(doc_key, number), db=storage.blobs)
        except EngineError:  # the engine closed mid-download
            chunk = None
        if chunk is None:  # deleted while being sent: cut the response short
            response.complete = False
            return
        offset = number * blobs.CHUNK_SIZE
        if offset < start or offset + len(chunk) > stop:  # the ends of a range
            chunk = chunk[max(0, start - offset) : stop - offset]
        yield chunk


def _upload(
    runtime: Runtime,
    query: str,
    header: Callable[[str], str | None],
    read_body: Callable[[int], bytes],
    max_upload_size: int,
    read_all: Callable[[int], bytes | Response | None] | None = None,
) -> Response:
    db = runtime.db
    token = parse_qs(query).get("token", [""])[0]
    why = files.check_upload_token(db, token) if token else "the upload URL has no token"
    if why is not None:
        return _error(401, "InvalidUploadToken", f"Invalid upload URL: {why}.")
    data = _body(header, read_body, max_upload_size, "An upload", read_all=read_all)
    if isinstance(data, Response):
        return data
    try:
        storage_id = files.store_file(
            db, data, header("Content-Type") or None, sha256=_digest_header(header("Digest"))
        )
    except ValidationError as error:
        code = "Sha256Mismatch" if "Sha256" in str(error) else "BadRequest"
        return _error(400, code, str(error))
    except EngineError as error:  # the storage failed (disk full, engine closed, ...)
        return _failed(db, error)
    return _json(200, {"storageId": storage_id})


def _digest_header(value: str | None) -> str | None:
    """The base64 SHA-256 of a ``Digest: sha-256=<base64>`` header (other algorithms ignored)."""
    if not value:
        return None
    for part in value.split(","):
        algorithm, _, digest = part.strip().partition("=")
        if algorithm.lower() == "sha-256" and digest:
            return digest
    return None
