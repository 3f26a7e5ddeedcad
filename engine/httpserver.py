"""A small HTTP server for file URLs: downloads and uploads, on the standard library.

``Engine.serve_http(host, port)`` starts one on a daemon thread. It answers
Convex's two storage endpoints:

- ``GET <origin>/api/storage/<storage id>-<signature>`` (a URL from
  ``ctx.storage.get_url``): the file's bytes with its ``Content-Type``,
  ``Content-Length`` and ``Digest: sha-256=<base64>``; 404 once the file is
  deleted or for a URL this database did not sign. ``HEAD`` as well.
- ``POST <origin>/api/storage/upload?token=...`` (a URL from
  ``ctx.storage.generate_upload_url``, valid one hour): stores the request
  body as a new file, with the request's ``Content-Type``; an optional
  ``Digest: sha-256=<base64>`` header is checked. Answers
  ``{"storageId": "..."}``. The body needs a ``Content-Length``.

Every answer allows any origin (``Access-Control-Allow-Origin: *``) and
``OPTIONS`` answers CORS preflights, so a browser page on another origin can
upload and download, as with Convex. Errors are JSON
``{"code": ..., "message": ...}``.

A download reads the file chunk by chunk, each chunk in a short read txn of
its own (a slow client does not pin a snapshot); an upload is held in memory
until it is stored.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from . import blobs, files
from .errors import EngineError, ValidationError

if TYPE_CHECKING:
    from .functions import Runtime

__all__ = ["HttpServer"]

_PREFIX = "/api/storage/"
_UPLOAD = "/api/storage/upload"


class HttpServer:
    """A running file server; stop it with :meth:`close` (or a ``with`` block).

    Example::

        with Engine.open("./data", functions=app) as db, db.serve_http("127.0.0.1", 0) as server:
            print(server.url)    # http://127.0.0.1:43817, the origin of file URLs now

    ``url`` is the origin it serves (the port resolved when 0 was asked).
    """

    def __init__(self, runtime: Runtime, host: str, port: int) -> None:
        self._runtime = runtime
        handler = type("_BoundHandler", (_Handler,), {"runtime": runtime})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        address = self._server.server_address
        bound_host = address[0].decode() if isinstance(address[0], bytes) else str(address[0])
        bound_port = address[1]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        self.host = bound_host
        self.port = int(bound_port)
        self.url = f"http://{shown}:{self.port}"
        self._thread = threading.Thread(
            # A short poll: close() waits up to one interval for the loop to notice.
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name=f"convexlite-http-{self.port}",
            daemon=True,
        )
        self._thread.start()
        self._closed = False

    def close(self) -> None:
        """Stop serving and free the port. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        if self._runtime.served_url == self.url:
            self._runtime.served_url = None

    def __enter__(self) -> HttpServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Handler(BaseHTTPRequestHandler):
    runtime: Runtime
    protocol_version = "HTTP/1.1"
    server_version = "convexlite"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # an embedded server does not write to stderr; the host logs if it wants

    # -- answers -------------------------------------------------------------------

    def _cors(self) -> None:
        self.send_header("Access-Control-Allow-Origin", "*")

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self._cors()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, status: int, code: str, message: str) -> None:
        self._json(status, {"code": code, "message": message})

    # -- methods ----------------------------------------------------------------------

    def do_OPTIONS(self) -> None:
        self.send_response(204)
        self._cors()
        self.send_header("Access-Control-Allow-Methods", "GET, HEAD, POST, OPTIONS")
        self.send_header("Access-Control-Allow-Headers", "Content-Type, Digest")
        self.send_header("Access-Control-Max-Age", "86400")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if not path.startswith(_PREFIX) or path == _UPLOAD:
            self._error(404, "NotFound", f"No route for GET {path}")
            return
        db = self.runtime.db
        storage_id = files.parse_file_url_path(db, path[len(_PREFIX) :])
        found = None
        if storage_id is not None:
            try:
                found = files.metadata_and_key(db, storage_id)
            except EngineError:
                found = None
        if found is None:
            self._error(404, "FileNotFound", "File not found")
            return
        document, doc_key = found
        size = int(document["size"])
        self.send_response(200)
        self._cors()
        self.send_header("Content-Type", document.get("contentType", "application/octet-stream"))
        self.send_header("Content-Length", str(size))
        self.send_header("Digest", f"sha-256={document['sha256']}")
        self.send_header("ETag", f'"{document["sha256"]}"')
        self.end_headers()
        if self.command == "HEAD":
            return
        storage = db.storage
        for number in range(max(1, -(-size // blobs.CHUNK_SIZE))):
            with storage.read() as rtxn:
                chunk = rtxn.get(blobs.chunk_key(doc_key, number), db=storage.blobs)
            if chunk is None:  # deleted while being sent: cut the response short
                self.close_connection = True
                return
            self.wfile.write(chunk)

    do_HEAD = do_GET

    def do_POST(self) -> None:
        split = urlsplit(self.path)
        if split.path != _UPLOAD:
            self._discard_body()  # keep the connection usable for the next request
            self._error(404, "NotFound", f"No route for POST {split.path}")
            return
        token = parse_qs(split.query).get("token", [""])[0]
        db = self.runtime.db
        why = files.check_upload_token(db, token) if token else "the upload URL has no token"
        if why is not None:
            self._discard_body()
            self._error(401, "InvalidUploadToken", f"Invalid upload URL: {why}.")
            return
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self.close_connection = True
            self._error(411, "LengthRequired", "An upload needs a Content-Length header.")
            return
        data = self.rfile.read(int(length))
        if len(data) != int(length):
            self.close_connection = True
            self._error(400, "IncompleteBody", "The upload ended before Content-Length bytes.")
            return
        sha256 = _digest_header(self.headers.get("Digest"))
        try:
            storage_id = files.store_file(
                db, data, self.headers.get("Content-Type") or None, sha256=sha256
            )
        except ValidationError as error:
            code = "Sha256Mismatch" if "Sha256" in str(error) else "BadRequest"
            self._error(400, code, str(error))
            return
        except EngineError as error:  # the storage failed (disk full, engine closed, ...)
            self._error(500, "StorageFailed", f"The file could not be stored: {error}")
            return
        self._json(200, {"storageId": storage_id})

    def _discard_body(self) -> None:
        length = self.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) <= 1 << 20:
            self.rfile.read(int(length))
        else:
            self.close_connection = True


def _digest_header(value: str | None) -> str | None:
    """The base64 SHA-256 of a ``Digest: sha-256=<base64>`` header (other algorithms ignored)."""
    if not value:
        return None
    for part in value.split(","):
        algorithm, _, digest = part.strip().partition("=")
        if algorithm.lower() == "sha-256" and digest:
            return digest
    return None
