"""File storage: ``ctx.storage`` and the ``_storage`` system table, as in Convex.

A stored file is a document of the system table ``_storage``::

    {"_id": ..., "_creationTime": ..., "sha256": "<base64>", "size": 5.0,
     "contentType": "text/plain"}          # contentType only when known

plus its bytes in the ``blobs`` sub-database (:mod:`engine.blobs`), written in
the same LMDB write txn. Its ``_id`` is the *storage id* (validate it with
``v.id("_storage")``); read the rows with ``ctx.db.system.get(id)`` and
``ctx.db.system.query("_storage")``. User code cannot write ``_storage``
through ``ctx.db``.

What each context gets (Convex's ``StorageReader`` / ``StorageWriter`` /
``StorageActionWriter``):

- queries: ``get_url``, ``get_metadata`` (deprecated in Convex);
- mutations: those, plus ``generate_upload_url`` and ``delete`` (part of the
  mutation's transaction: it rolls back with it);
- actions: all of them awaitable, plus ``store`` and ``get``; each call is its
  own transaction, as the other ``ActionCtx`` methods are.

URLs. A file URL is ``<origin>/api/storage/<storage id>-<signature>``: the
signature (an HMAC of the id under the database's secret) makes the URL a
capability, as Convex's are: knowing a storage id is not enough to download,
``get_url`` is. Only deleting the file revokes it. An upload URL is
``<origin>/api/storage/upload?token=<token>``, valid one hour. The origin is
``Engine.open(site_url=...)``, else that of the server ``Engine.serve_http``
runs, else :data:`DEFAULT_SITE_URL` (Convex's local backend default).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import os
import struct
import time
from typing import TYPE_CHECKING, Any

from . import blobs
from .errors import (
    InvalidId,
    StorageIdNotFound,
    ValidationError,
    closed_error,
    unavailable_attribute,
)

if TYPE_CHECKING:
    from .database import Database
    from .functions import Runtime
    from .transaction import Transaction

__all__ = [
    "DEFAULT_SITE_URL",
    "STORAGE_TABLE",
    "UPLOAD_URL_TTL",
    "StorageActionWriter",
    "StorageReader",
    "StorageWriter",
    "check_upload_token",
    "delete_in",
    "file_url",
    "metadata",
    "metadata_and_key",
    "origin",
    "parse_file_url_path",
    "read_file",
    "store_file",
    "store_file_at",
    "upload_url",
]

STORAGE_TABLE = "_storage"
#: The origin of URLs when neither ``site_url`` nor a running server gives one:
#: the address of a self-hosted Convex backend (``CONVEX_CLOUD_ORIGIN``).
DEFAULT_SITE_URL = "http://127.0.0.1:3210"
#: How long an upload URL stays valid, in seconds (Convex: one hour).
UPLOAD_URL_TTL = 3600.0
_U64 = struct.Struct(">Q")
_SIGNATURE_BYTES = 16
_TOKEN_CHARS = 43  # 8 B expiry ‖ 8 B nonce ‖ 16 B MAC, base64url without its "="


# -- URLs and tokens -------------------------------------------------------------


def _key(db: Database, purpose: bytes) -> bytes:
    """A key for one purpose, derived from the database's secret (kept in ``meta``)."""
    return hmac.new(db.cursor_secret(), b"convexlite/" + purpose, hashlib.sha256).digest()


def _url_signature(db: Database, storage_id: str) -> str:
    mac = hmac.new(_key(db, b"file-url"), storage_id.encode(), hashlib.sha256)
    return mac.digest()[:_SIGNATURE_BYTES].hex()


def origin(runtime: Runtime | None) -> str:
    """The origin file and upload URLs start with (no trailing slash)."""
    if runtime is None:
        return DEFAULT_SITE_URL
    return (runtime.site_url or runtime.served_url or DEFAULT_SITE_URL).rstrip("/")


def file_url(db: Database, site: str, storage_id: str) -> str:
    """The download URL of a file: ``<site>/api/storage/<id>-<signature>``. Cost: two HMACs."""
    return f"{site}/api/storage/{storage_id}-{_url_signature(db, storage_id)}"


def parse_file_url_path(db: Database, segment: str) -> str | None:
    """The storage id of a file URL's last path segment, or None if it was not signed here."""
    storage_id, _, signature = segment.rpartition("-")
    expected = _url_signature(db, storage_id).encode()
    # Compared as bytes: compare_digest refuses str with non-ASCII characters.
    if not storage_id or not hmac.compare_digest(signature.encode(), expected):
        return None
    return storage_id


def upload_url(db: Database, site: str, now: float | None = None) -> str:
    """A fresh upload URL, valid :data:`UPLOAD_URL_TTL` seconds from ``now``."""
    expires_ms = int(((time.time() if now is None else now) + UPLOAD_URL_TTL) * 1000)
    body = _U64.pack(expires_ms) + os.urandom(8)
    mac = hmac.new(_key(db, b"upload"), body, hashlib.sha256).digest()[:_SIGNATURE_BYTES]
    token = base64.urlsafe_b64encode(body + mac).rstrip(b"=").decode()
    return f"{site}/api/storage/upload?token={token}"


def check_upload_token(db: Database, token: str, now: float | None = None) -> str | None:
    """None if ``token`` is a valid, unexpired upload token of this database, else why not."""
    # Strict: exactly the 43 characters upload_url writes (base64url, unpadded), in
    # their canonical form; urlsafe_b64decode alone skips characters outside the
    # alphabet and ignores the spare bits of the last one.
    if len(token) != _TOKEN_CHARS or not token.isascii():
        return "the upload token is malformed"
    try:
        raw = base64.b64decode(token.encode() + b"=", altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        return "the upload token is malformed"
    if len(raw) != 16 + _SIGNATURE_BYTES or base64.urlsafe_b64encode(raw)[:-1] != token.encode():
        return "the upload token is malformed"
    body, mac = raw[:16], raw[16:]
    expected = hmac.new(_key(db, b"upload"), body, hashlib.sha256).digest()[:_SIGNATURE_BYTES]
    if not hmac.compare_digest(mac, expected):
        return "the upload token was not issued by this database (or was altered)"
    expires_ms = _U64.unpack(body[:8])[0]
    if (time.time() if now is None else now) * 1000 > expires_ms:
        return "the upload URL has expired (upload URLs are valid for 1 hour): generate a new one"
    return None


# -- the operations, on a transaction or a database ---------------------------------


def _locate(txn: Transaction, storage_id: object) -> tuple[bool, bytes]:
    """(whether the ``_storage`` table exists, document key) of a storage id.

    Raises :class:`InvalidId` for a malformed id or the id of another table.
    """
    table, doc_key, _ = txn._locate(storage_id)
    if table is None:
        return False, doc_key
    if table.name != STORAGE_TABLE:
        raise InvalidId(
            f'Invalid storage ID "{storage_id}": it is an ID of table "{table.name}", but '
            f'ctx.storage takes IDs of table "{STORAGE_TABLE}" (as returned by '
            'ctx.storage.store or an upload); validate them with v.id("_storage").',
            value=storage_id,
        )
    return True, doc_key


def _document(txn: Transaction, storage_id: object) -> tuple[dict[str, Any] | None, bytes]:
    exists, doc_key = _locate(txn, storage_id)
    if not exists:
        return None, doc_key
    assert isinstance(storage_id, str)
    return txn.get(storage_id), doc_key


def metadata(document: dict[str, Any]) -> dict[str, Any]:
    """Convex's ``FileMetadata`` of a ``_storage`` row (``sha256`` in hex there)."""
    return {
        "storageId": document["_id"],
        "sha256": base64.b64decode(document["sha256"]).hex(),
        "size": document["size"],
        "contentType": document.get("contentType"),
    }


def delete_in(txn: Transaction, storage_id: str) -> None:
    """Delete a file inside ``txn``: its row now, its bytes when ``txn`` commits."""
    document, doc_key = _document(txn, storage_id)
    if document is None:
        raise StorageIdNotFound(f"storage id {storage_id} not found", id=storage_id)
    previous = txn.system_writes
    txn.system_writes = True
    try:
        txn.delete(storage_id)
    finally:
        txn.system_writes = previous
    txn.writes.set_blob(doc_key, None)


def _sha256_option(sha256: str) -> bytes:
    """The digest a ``sha256=`` option names: 64 hex digits or base64 (as a Digest header)."""
    if not isinstance(sha256, str):
        raise ValidationError(
            f"sha256 must be a str (hex or base64), got {type(sha256).__name__}", path="sha256"
        )
    try:
        if len(sha256) == 64:
            return bytes.fromhex(sha256)
        digest = base64.b64decode(sha256, validate=True)
    except (ValueError, binascii.Error):
        digest = b""
    if len(digest) != 32:
        raise ValidationError(
            f"sha256 must be a SHA-256 digest in hex (64 digits) or base64 (44 characters), "
            f"got {sha256!r}",
            path="sha256",
        )
    return digest


def store_file(
    db: Database,
    data: bytes | bytearray | memoryview,
    content_type: str | None = None,
    sha256: str | None = None,
) -> str:
    """Store ``data`` as a new file in one transaction; returns its storage id.

    As :func:`store_file_at`, without the commit timestamp.
    """
    return store_file_at(db, data, content_type, sha256)[0]


def store_file_at(
    db: Database,
    data: bytes | bytearray | memoryview,
    content_type: str | None = None,
    sha256: str | None = None,
) -> tuple[str, int]:
    """Store ``data`` as a new file in one transaction; returns its storage id and the
    commit timestamp (for ``Database.wait_for_subscriptions``).

    Cost: one SHA-256 pass over the bytes, one commit writing the row and
    ``ceil(size / 256 KiB)`` chunks. Raises :class:`ValidationError` when
    ``sha256`` is given and does not match the bytes.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ValidationError(
            f"storage.store expects bytes, got {type(data).__name__}: pass the file's "
            "contents (bytes, bytearray or memoryview)",
            path="data",
        )
    if content_type is not None and (
        not isinstance(content_type, str)
        or not content_type.isascii()
        or not content_type.isprintable()
    ):
        # Visible ASCII and spaces only: the value is sent back as a Content-Type
        # header, which carries no other characters (PEP 3333 forbids them in WSGI).
        raise ValidationError(
            f"content_type must be a str of visible ASCII characters and spaces (a MIME "
            f"type such as 'image/png' or 'text/plain; charset=utf-8') or None, got "
            f"{content_type!r}; percent-encode other characters (RFC 8187)",
            path="content_type",
        )
    data = bytes(data)
    digest = hashlib.sha256(data).digest()
    if sha256 is not None and not hmac.compare_digest(_sha256_option(sha256), digest):
        raise ValidationError(
            f"Sha256 mismatch: the bytes hash to {digest.hex()} "
            f"({base64.b64encode(digest).decode()}), but sha256={sha256!r} was given",
            path="sha256",
        )
    document: dict[str, Any] = {
        "sha256": base64.b64encode(digest).decode(),
        "size": float(len(data)),
    }
    if content_type is not None:
        document["contentType"] = content_type

    def body(txn: Transaction) -> str:
        previous = txn.system_writes
        txn.system_writes = True
        try:
            storage_id = txn.insert(STORAGE_TABLE, dict(document), system=True)
        finally:
            txn.system_writes = previous
        _, doc_key = _locate(txn, storage_id)
        txn.writes.set_blob(doc_key, data)
        return storage_id

    storage_id, ts = db.run(body, writable=True, source="storage.store")
    return storage_id, ts


def _read(db: Database, fn: Any) -> Any:
    """``fn(txn)`` in a read transaction, as a call :meth:`Database.shutdown` waits for:
    once the engine is closing it raises the engine's closed error (not LMDB's
    "closed/deleted/dropped object"), and a damaged page is a :class:`CorruptionError`."""
    return db.run(fn, writable=False, source="storage")[0]


def metadata_and_key(db: Database, storage_id: str) -> tuple[dict[str, Any], bytes] | None:
    """A file's ``_storage`` row and document key (the key of its chunks), or None."""

    def read(txn: Transaction) -> tuple[dict[str, Any], bytes] | None:
        document, doc_key = _document(txn, storage_id)
        return None if document is None else (document, doc_key)

    result: tuple[dict[str, Any], bytes] | None = _read(db, read)
    return result


#: Files up to this size are read in the snapshot that found their row (one chunk, one
#: copy); larger ones through zero-copy buffers of a second snapshot (see read_file).
_READ_IN_PLACE = 64 << 10


def read_file(db: Database, storage_id: str) -> tuple[dict[str, Any], bytes] | None:
    """A file's ``_storage`` row and bytes, from one snapshot; None if it does not exist.

    Cost: one lookup and a scan of the file's chunks (one copy of its bytes).
    """

    def read(txn: Transaction) -> tuple[dict[str, Any], bytes, bytes | None] | None:
        document, doc_key = _document(txn, storage_id)
        if document is None:
            return None
        if document["size"] <= _READ_IN_PLACE:  # its only chunk, copied once as it is read
            chunk = txn._txn().get(blobs.chunk_key(doc_key, 0), None, db.storage.blobs)
            return document, doc_key, b"" if chunk is None else chunk
        return document, doc_key, None

    found: tuple[dict[str, Any], bytes, bytes | None] | None = _read(db, read)
    if found is None:
        return None
    document, doc_key, small = found
    if small is not None:
        return document, small

    # The bytes through zero-copy buffers, joined once: copying each 256 KiB chunk out
    # first doubled the memory a read takes, and the allocator handed it back to the
    # OS after every read (4 MiB: 2,016 page faults and 6.8 ms; raw LMDB 0.18 ms). The
    # chunks under a document key never change (storage ids are not reused), so a
    # second snapshot holds the same bytes, or none once the file is deleted since.
    def chunks() -> bytes | None:
        with db.storage.read(buffers=True) as rtxn:
            return blobs.read(rtxn, db.storage.blobs, doc_key)

    data = db.counted(chunks)  # counted, as _read, in this snapshot alone
    if data is None or len(data) != int(document["size"]):
        return None  # deleted after the first snapshot
    return document, data


# -- ctx.storage ----------------------------------------------------------------------


class StorageReader:
    """A query's ``ctx.storage``: file URLs and metadata (Convex's ``StorageReader``).

    Example::

        @query(args={"id": v.id("_storage")})
        def avatar_url(ctx, id):
            return ctx.storage.get_url(id)     # None once the file is deleted
    """

    __slots__ = ("_runtime", "_txn")

    def __init__(self, txn: Transaction, runtime: Runtime | None) -> None:
        self._txn = txn
        self._runtime = runtime

    def __getattr__(self, name: str) -> Any:
        # Only for names the class lacks: say where the method is (Convex's types do).
        where = _STORAGE_METHODS.get(name)
        kind = "query" if type(self) is StorageReader else "mutation"
        hint = None if where is None else f"it is {where}"
        unavailable_attribute(self, name, f"ctx.storage.{name}", kind, hint)

    def get_url(self, storage_id: str) -> str | None:
        """A URL that downloads the file with an HTTP GET, or None if it does not exist.

        Reads the file's ``_storage`` row (so a subscription re-runs when the file
        is deleted). Cost: one lookup, two HMACs. Raises :class:`InvalidId` for an
        id that is malformed or of another table.
        """
        document, _ = _document(self._txn, storage_id)
        if document is None:
            return None
        return file_url(self._txn.db, origin(self._runtime), storage_id)

    def get_metadata(self, storage_id: str) -> dict[str, Any] | None:
        """Deprecated in Convex (use ``ctx.db.system.get(id)``): ``{"storageId",
        "sha256" (hex), "size", "contentType" (or None)}``, or None if missing."""
        document, _ = _document(self._txn, storage_id)
        return None if document is None else metadata(document)


class StorageWriter(StorageReader):
    """A mutation's ``ctx.storage``: the reader plus upload URLs and ``delete``.

    Example::

        @mutation(args={})
        def upload_url(ctx):
            return ctx.storage.generate_upload_url()   # POST the file's bytes there
    """

    __slots__ = ()

    def generate_upload_url(self) -> str:
        """A URL that stores the body of an HTTP POST as a new file, valid for one hour.

        The POST answers ``{"storageId": ...}``; it needs a server
        (``Engine.serve_http``) at the URL's origin. Cost: two HMACs, no write.
        """
        return upload_url(self._txn.db, origin(self._runtime))

    def delete(self, storage_id: str) -> None:
        """Delete the file, as part of this mutation (a rollback keeps it).

        Raises :class:`StorageIdNotFound` (``storage id <id> not found``) if it
        does not exist. Its URLs answer 404 once the mutation commits.
        """
        delete_in(self._txn, storage_id)


class StorageActionWriter:
    """An action's ``ctx.storage``: every operation awaitable, each its own transaction.

    Example::

        @action(args={"text": v.string()})
        async def save(ctx, text):
            storage_id = await ctx.storage.store(text.encode(), "text/plain")
            assert await ctx.storage.get(storage_id) == text.encode()
            return await ctx.storage.get_url(storage_id)
    """

    __slots__ = ("_runtime",)

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    async def store(
        self,
        data: bytes | bytearray | memoryview,
        content_type: str | None = None,
        *,
        sha256: str | None = None,
    ) -> str:
        """Store ``data`` as a new file; returns its storage id (``Id<"_storage">``).

        ``sha256`` (hex or base64), if given, must match the bytes, else
        :class:`ValidationError` and nothing is stored. Cost: a hash and one commit.
        """
        return await asyncio.to_thread(store_file, self._runtime.db, data, content_type, sha256)

    async def get(self, storage_id: str) -> bytes | None:
        """The file's bytes, or None if it does not exist. Cost: one read of every chunk."""
        found = await asyncio.to_thread(read_file, self._runtime.db, storage_id)
        return None if found is None else found[1]

    async def get_url(self, storage_id: str) -> str | None:
        """As :meth:`StorageReader.get_url`, in a read transaction of its own."""
        runtime = self._runtime
        return await asyncio.to_thread(
            _read, runtime.db, lambda txn: StorageReader(txn, runtime).get_url(storage_id)
        )

    async def get_metadata(self, storage_id: str) -> dict[str, Any] | None:
        """As :meth:`StorageReader.get_metadata` (deprecated in Convex)."""
        runtime = self._runtime
        return await asyncio.to_thread(
            _read, runtime.db, lambda txn: StorageReader(txn, runtime).get_metadata(storage_id)
        )

    async def generate_upload_url(self) -> str:
        """As :meth:`StorageWriter.generate_upload_url`; the engine's closed error once
        it is closing (no server of it answers the URL then)."""
        db = self._runtime.db
        if db.closing:
            raise closed_error()
        return upload_url(db, origin(self._runtime))

    async def delete(self, storage_id: str) -> None:
        """Delete the file in a transaction of its own; :class:`StorageIdNotFound` if missing."""
        db = self._runtime.db
        await asyncio.to_thread(
            db.run, lambda txn: delete_in(txn, storage_id), writable=True, source="storage.delete"
        )


#: Where the ctx.storage methods a query's or mutation's ctx.storage may lack are.
_STORAGE_METHODS = {
    "generate_upload_url": "in mutations and actions",
    "delete": "in mutations and actions",
    "store": "in actions only: store the bytes from an action (or from the host with "
    "Engine.store_file) and pass the storage id",
    "get": "in actions only: a query or mutation reads the file's row with "
    "ctx.db.system.get(id), or hands out ctx.storage.get_url(id)",
}
