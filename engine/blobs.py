"""Blobs: the bytes of stored files, chunked in the ``blobs`` sub-database.

A file is a ``_storage`` document (its metadata) plus its bytes under the
same 20-byte document key::

    blobs:  document key (table number 4 B ‖ internal id 16 B) ‖ chunk number (4 B BE)
            → up to CHUNK_SIZE bytes

Chunks are numbered from 0 without gaps; every file has at least chunk 0 (an
empty file has one empty chunk), so "the file has its bytes" is a key lookup.
Chunking keeps every LMDB value small enough that a large file never needs
one giant run of contiguous overflow pages.

Bytes never travel alone: a transaction buffers them in its write set next
to the ``_storage`` document (:meth:`engine.writeset.WriteSet.set_blob`), and
the committer writes both in the same LMDB write txn (:func:`apply`). A crash
therefore leaves either the document and every chunk, or neither; deleting
the document deletes the chunks in the same txn.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Callable, Iterator
from typing import Any

from .encoding import decode_document

__all__ = ["CHUNK_SIZE", "apply", "check", "chunk_key", "chunks", "read"]

#: Bytes per chunk: large enough that a file costs few B-tree entries, small
#: enough that each value's overflow pages are easy for LMDB to place.
CHUNK_SIZE = 256 << 10
_U32 = struct.Struct(">I")
_DOC_KEY = 20


def chunk_key(doc_key: bytes, number: int) -> bytes:
    """The ``blobs`` key of chunk ``number`` of the file stored under ``doc_key``."""
    return doc_key + _U32.pack(number)


def chunks(data: bytes) -> Iterator[memoryview]:
    """``data`` cut into chunks (at least one, possibly empty): views, not copies (LMDB
    copies each into the map once; copying them out first cost 4.6 ms of a 4 MiB
    store's 15). Cost: one slice per chunk."""
    view = memoryview(data)
    yield view[:CHUNK_SIZE]
    for start in range(CHUNK_SIZE, len(data), CHUNK_SIZE):
        yield view[start : start + CHUNK_SIZE]


def apply(wtxn: Any, blobs_db: Any, changes: dict[bytes, bytes | None]) -> None:
    """Write every ``doc_key → bytes`` of ``changes`` and delete every ``doc_key → None``.

    Runs inside the committer's LMDB write txn, after the validation that
    made these changes final. Cost: one put per chunk; a delete walks the
    file's chunks.
    """
    puts: list[tuple[bytes, memoryview]] = []
    for doc_key, data in changes.items():
        if data is None:
            _delete(wtxn, blobs_db, doc_key)
        else:
            puts.extend((chunk_key(doc_key, n), c) for n, c in enumerate(chunks(data)))
    if puts:
        puts.sort()
        wtxn.cursor(db=blobs_db).putmulti(puts)


def _delete(wtxn: Any, blobs_db: Any, doc_key: bytes) -> None:
    cursor = wtxn.cursor(db=blobs_db)
    try:
        if not cursor.set_range(doc_key):
            return
        while cursor.key()[:_DOC_KEY] == doc_key:
            if not cursor.delete():  # moves to the next key; False at the end
                break
    finally:
        cursor.close()


def read(rtxn: Any, blobs_db: Any, doc_key: bytes) -> bytes | None:
    """Every chunk of the file under ``doc_key``, joined; None when it has none.

    Cost: one scan over the file's chunks, one copy of its bytes.
    """
    parts: list[bytes] = []
    cursor = rtxn.cursor(db=blobs_db)
    try:
        if cursor.set_range(doc_key):
            for key, value in cursor.iternext(keys=True, values=True):
                if key[:_DOC_KEY] != doc_key:
                    break
                parts.append(value)
    finally:
        cursor.close()
    return b"".join(parts) if parts else None


#: The fields of a ``_storage`` row (Convex's, with ``contentType`` optional).
_ROW_FIELDS = frozenset({"_id", "_creationTime", "sha256", "size", "contentType"})


def check(
    rtxn: Any,
    blobs_db: Any,
    documents_db: Any,
    storage_prefix: bytes | None,
    problem: Callable[[str], None],
) -> dict[str, int]:
    """Verify the blobs against the ``_storage`` rows; report ``{"files", "bytes"}``.

    Every file's chunks are numbered 0, 1, … without gaps, all but the last exactly
    :data:`CHUNK_SIZE` bytes, ``max(1, ceil(size / CHUNK_SIZE))`` of them (the HTTP
    download relies on that layout), their bytes have the row's ``size`` and ``sha256``; no chunk lacks a row, and no row lacks its
    chunks. ``storage_prefix`` is the ``_storage`` table's 4-byte key prefix
    (None: the table does not exist, so no chunk may). Cost: one pass over
    ``blobs`` (hashing every byte) and one over the ``_storage`` rows.
    """
    files = total = 0
    seen: set[bytes] = set()
    cursor = rtxn.cursor(db=blobs_db)
    current: bytes | None = None
    digest: Any = None
    size = expected_chunk = previous_length = 0

    def finish() -> None:
        nonlocal files, total
        assert current is not None
        if expected_chunk != max(1, -(-size // CHUNK_SIZE)):
            problem(
                f"blob {current.hex()} has {expected_chunk} chunks for {size} bytes; "
                f"{max(1, -(-size // CHUNK_SIZE))} of {CHUNK_SIZE} bytes belong"
            )
        raw = rtxn.get(current, db=documents_db)
        if storage_prefix is None or current[:4] != storage_prefix or raw is None:
            problem(f"blob {current.hex()} has no _storage row")
            return
        try:
            document = decode_document(raw)
        except Exception as error:
            problem(f"the _storage row of blob {current.hex()} does not decode: {error}")
            return
        sha = base64.b64encode(digest.digest()).decode()
        extra = set(document) - _ROW_FIELDS
        if extra:
            problem(
                f"file {document.get('_id')}: its _storage row has unexpected fields "
                f"{sorted(extra)}; a row has {sorted(_ROW_FIELDS)} only"
            )
        content_type = document.get("contentType", "")
        if not isinstance(content_type, str):
            problem(
                f"file {document.get('_id')}: its _storage row's contentType is a "
                f"{type(content_type).__name__} ({content_type!r}); a string belongs there"
            )
        if type(document.get("size")) is not float:  # an Int64 5 equals 5.0 in Python
            problem(
                f"file {document.get('_id')}: its _storage row's size is "
                f"{document.get('size')!r}, a {type(document.get('size')).__name__}; the "
                "size is a Float64 (Convex's number)"
            )
        elif document["size"] != float(size) or document.get("sha256") != sha:
            problem(
                f"file {document.get('_id')} has {size} bytes with sha256 {sha}, but its "
                f"_storage row records size {document.get('size')!r} and sha256 "
                f"{document.get('sha256')!r}"
            )
        files += 1
        total += size

    for raw_key, value in cursor.iternext(keys=True, values=True):
        key = bytes(raw_key)
        if len(key) != _DOC_KEY + 4:
            problem(f"blob key {key.hex()} is not {_DOC_KEY + 4} bytes")
            continue
        doc_key, number = key[:_DOC_KEY], _U32.unpack(key[_DOC_KEY:])[0]
        if doc_key != current:
            if current is not None:
                finish()
            current, digest, size, expected_chunk = doc_key, hashlib.sha256(), 0, 0
            seen.add(doc_key)
        elif previous_length != CHUNK_SIZE:
            problem(
                f"blob {doc_key.hex()} has chunk {expected_chunk - 1} of {previous_length} "
                f"bytes; every chunk but the last has {CHUNK_SIZE}"
            )
        if number != expected_chunk:
            problem(f"blob {doc_key.hex()} has chunk {number} where chunk {expected_chunk} belongs")
        expected_chunk = number + 1
        previous_length = len(value)
        digest.update(value)
        size += len(value)
    if current is not None:
        finish()
    cursor.close()
    if storage_prefix is not None:
        cursor = rtxn.cursor(db=documents_db)
        if cursor.set_range(storage_prefix):
            for raw_key in cursor.iternext(keys=True, values=False):
                key = bytes(raw_key)
                if key[:4] != storage_prefix:
                    break
                if key not in seen:
                    problem(f"_storage row {key.hex()} has no blob (its file's bytes are missing)")
        cursor.close()
    return {"files": files, "bytes": total}
