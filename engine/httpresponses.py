"""The answers the engine's HTTP endpoints compose: :class:`Response` and JSON errors.

:func:`engine.httphandling.handle` returns a :class:`Response` (a status, headers, and
the body as an iterable of bytes); the front ends (:mod:`engine.httpserver`,
:mod:`engine.wsgi`) send it. The engine's own answers allow any origin
(``Access-Control-Allow-Origin: *``) and its errors are JSON
``{"code": ..., "message": ...}``: ``_json`` and ``_error`` build them, ``_failed``
the 503 or 500 for an engine that closed or a storage that failed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from .errors import EngineError

__all__ = ["Response"]


class Response:
    """What :func:`handle` answers: a status, headers, and the body as an iterable of bytes.

    ``complete`` turns False when a download stopped short (the file was deleted
    while being sent): the front end then closes the connection.
    """

    __slots__ = ("body", "complete", "headers", "status")

    def __init__(
        self, status: int, headers: list[tuple[str, str]], body: Iterable[bytes] = ()
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.complete = True


_CORS = ("Access-Control-Allow-Origin", "*")


def _json(status: int, body: dict[str, Any]) -> Response:
    data = json.dumps(body).encode()
    return Response(
        status,
        [_CORS, ("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
        [data],
    )


def _error(status: int, code: str, message: str) -> Response:
    return _json(status, {"code": code, "message": message})


def _failed(db: Any, error: EngineError) -> Response:
    """503 when the engine is closed, else 500: the storage failed (disk full, ...)."""
    if db.storage.closed:
        return _error(503, "EngineClosed", "The database is closed.")
    return _error(500, "StorageFailed", f"The storage failed: {error}")
