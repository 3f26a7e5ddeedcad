"""Baselines measured beside convexlite: sqlite3 (JSON + expression indexes, WAL)
and raw py-lmdb + msgspec (a hand-rolled primary key and secondary indexes: the
physical limit for Python on LMDB).

Both store the standard workload: documents ``{name: str, age: int 0-99,
city: one of 100, score: float}`` from :func:`make_documents`.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import struct
from collections.abc import Iterable, Sequence
from typing import Any

import lmdb
import msgspec

__all__ = [
    "RawLmdbLayoutStore",
    "RawLmdbStore",
    "SqliteStore",
    "close_connections",
    "connect",
    "make_documents",
]

#: Every connection :func:`connect` made and :func:`close_connections` has not closed.
_connections: list[sqlite3.Connection] = []


def connect(path: str, synchronous: str) -> sqlite3.Connection:
    """A sqlite3 connection to ``path`` in WAL mode with ``synchronous`` (FULL, NORMAL
    or OFF), in autocommit mode and usable from any thread; it stays open until
    :func:`close_connections` (the runner calls it after each benchmark).

    Kept rather than left to the garbage collector: Python 3.13 warns of a connection
    collected unclosed (``ResourceWarning``), which the tests turn into a failure.
    """
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=60)
    _connections.append(conn)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    return conn


def close_connections() -> None:
    """Close every connection :func:`connect` made (after a benchmark's run)."""
    while _connections:
        _connections.pop().close()


def make_documents(n: int, seed: int = 1) -> list[dict[str, Any]]:
    """``n`` documents of the standard workload (seeded, so every system gets the same)."""
    rng = random.Random(seed)
    return [
        {
            "name": f"user{i}",
            "age": rng.randrange(100),
            "city": f"c{rng.randrange(100)}",
            "score": rng.random() * 100,
        }
        for i in range(n)
    ]


class SqliteStore:
    """sqlite3 in WAL mode, documents as JSON text, expression indexes on fields."""

    def __init__(
        self, path: str, synchronous: str = "NORMAL", indexes: Sequence[str] = ("city", "age")
    ) -> None:
        self.path = path
        self.synchronous = synchronous
        self.indexes = tuple(indexes)
        self.conn = connect(path, synchronous)
        self.conn.execute("CREATE TABLE IF NOT EXISTS docs (id INTEGER PRIMARY KEY, doc TEXT)")
        for field in self.indexes:
            self.conn.execute(
                f"CREATE INDEX IF NOT EXISTS by_{field} ON docs "
                f"(json_extract(doc, '$.{field}'), id)"
            )

    def clone(self) -> SqliteStore:
        """Another connection to the same file (one per thread)."""
        return SqliteStore(self.path, self.synchronous, self.indexes)

    def insert_many(self, docs: Iterable[dict[str, Any]]) -> list[int]:
        cur = self.conn.cursor()
        cur.execute("BEGIN")
        ids = [
            int(cur.execute("INSERT INTO docs (doc) VALUES (?)", (json.dumps(d),)).lastrowid or 0)
            for d in docs
        ]
        cur.execute("COMMIT")
        return ids

    def insert_one(self, doc: dict[str, Any]) -> int:
        cur = self.conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        row = cur.execute("INSERT INTO docs (doc) VALUES (?)", (json.dumps(doc),)).lastrowid
        cur.execute("COMMIT")
        return int(row or 0)

    def get(self, doc_id: int) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT doc FROM docs WHERE id = ?", (doc_id,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def eq(self, field: str, value: Any) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            f"SELECT doc FROM docs WHERE json_extract(doc, '$.{field}') = ? "
            f"ORDER BY json_extract(doc, '$.{field}'), id",
            (value,),
        ).fetchall()
        return [json.loads(r[0]) for r in rows]

    def range_first(self, field: str, low: Any, n: int) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            f"SELECT doc FROM docs WHERE json_extract(doc, '$.{field}') >= ? "
            f"ORDER BY json_extract(doc, '$.{field}'), id LIMIT ?",
            (low, n),
        ).fetchall()
        return [json.loads(r[0]) for r in rows]

    def page_offset(self, field: str, page: int, size: int) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            f"SELECT doc FROM docs ORDER BY json_extract(doc, '$.{field}'), id LIMIT ? OFFSET ?",
            (size, page * size),
        ).fetchall()
        return [json.loads(r[0]) for r in rows]

    def page_keyset(
        self, field: str, after: tuple[Any, int] | None, size: int
    ) -> list[tuple[Any, int, dict[str, Any]]]:
        """The ``size`` rows after position ``after`` = (field value, id)."""
        if after is None:
            rows = self.conn.execute(
                f"SELECT json_extract(doc, '$.{field}'), id, doc FROM docs "
                f"ORDER BY json_extract(doc, '$.{field}'), id LIMIT ?",
                (size,),
            ).fetchall()
        else:
            # The rest of the position's own value, then the values after it: two index
            # seeks. One query with `field >= ? AND (field > ? OR id > ?)` made sqlite3
            # walk every row of the position's value before it (0.4-1 ms at some pages),
            # and a row-value comparison `(field, id) > (?, ?)` scanned from the start.
            rows = self.conn.execute(
                f"SELECT json_extract(doc, '$.{field}'), id, doc FROM docs "
                f"WHERE json_extract(doc, '$.{field}') = ? AND id > ? ORDER BY id LIMIT ?",
                (after[0], after[1], size),
            ).fetchall()
            if len(rows) < size:
                rows += self.conn.execute(
                    f"SELECT json_extract(doc, '$.{field}'), id, doc FROM docs "
                    f"WHERE json_extract(doc, '$.{field}') > ? "
                    f"ORDER BY json_extract(doc, '$.{field}'), id LIMIT ?",
                    (after[0], size - len(rows)),
                ).fetchall()
        return [(r[0], r[1], json.loads(r[2])) for r in rows]

    @staticmethod
    def keyset_position(row: tuple[Any, int, dict[str, Any]]) -> tuple[Any, int]:
        return row[0], row[1]


class RawLmdbLayoutStore:
    """py-lmdb writing what one convexlite commit writes, and nothing else.

    Per insert: the document under a random 20-byte key in ``documents``, one
    ``by_creation_time`` key (ascending) in ``indexes``, a log entry (8-byte
    timestamp key, the written keys as value) in ``log`` and the 16-byte head
    in ``meta``: four sub-databases, one of them written at a random place.
    This is the physical limit of convexlite's storage layout, where
    :class:`RawLmdbStore` (sequential ids) is the limit of LMDB itself.
    """

    def __init__(self, path: str, sync: bool = True) -> None:
        os.makedirs(path, exist_ok=True)
        self.env = lmdb.open(path, map_size=8 << 30, max_dbs=8, sync=sync, metasync=sync)
        self.documents = self.env.open_db(b"documents")
        self.indexes = self.env.open_db(b"indexes")
        self.log = self.env.open_db(b"log")
        self.meta = self.env.open_db(b"meta")
        self.encode = msgspec.msgpack.Encoder().encode
        self.next = 0

    def insert_one(self, doc: dict[str, Any]) -> bytes:
        self.next += 1
        doc_key = struct.pack(">I", 10001) + os.urandom(16)
        index_key = struct.pack(">IQ", 2, self.next) + doc_key[4:]
        with self.env.begin(None, None, True) as txn:
            txn.put(doc_key, self.encode(doc), True, True, False, self.documents)
            txn.put(index_key, b"", True, True, False, self.indexes)
            txn.put(
                struct.pack(">Q", self.next),
                self.encode([doc_key, index_key]),
                True,
                True,
                False,
                self.log,
            )
            txn.put(b"head", struct.pack(">QQ", self.next, 1), True, True, False, self.meta)
        return doc_key


_ID = struct.Struct(">QQ")


def _index_value(value: Any) -> bytes:
    if isinstance(value, int):
        return struct.pack(">Q", value + (1 << 63))
    if isinstance(value, str):
        return value.encode() + b"\x00"
    raise TypeError(f"unindexed type {type(value).__name__}")


class RawLmdbStore:
    """py-lmdb + msgspec: ``docs`` by 16-byte id and one index sub-db per field.

    Read txns hand out ``bytes`` (py-lmdb's default): for small values that is
    faster than its zero-copy buffers, so it is the physical limit. Arguments
    are passed to py-lmdb positionally, as convexlite does: its keyword parsing
    costs 80–190 ns per call.
    """

    def __init__(
        self,
        path: str,
        sync: bool = True,
        indexes: Sequence[str] = ("city", "age"),
        *,
        metasync: bool | None = None,
    ) -> None:
        """``sync``/``metasync`` as LMDB's flags (``metasync`` follows ``sync`` unless given)."""
        os.makedirs(path, exist_ok=True)
        self.env = lmdb.open(
            path,
            map_size=8 << 30,
            max_dbs=8,
            sync=sync,
            metasync=sync if metasync is None else metasync,
        )
        self.docs = self.env.open_db(b"docs")
        self.indexes = {f: self.env.open_db(f"ix_{f}".encode()) for f in indexes}
        self.encode = msgspec.msgpack.Encoder().encode
        self.decode = msgspec.msgpack.Decoder().decode
        self.next = 0

    def _put(self, txn: Any, doc: dict[str, Any]) -> bytes:
        self.next += 1
        doc_id = _ID.pack(0, self.next)
        txn.put(doc_id, self.encode(doc), True, True, False, self.docs)
        for field, db in self.indexes.items():
            txn.put(_index_value(doc[field]) + doc_id, b"", True, True, False, db)
        return doc_id

    def insert_many(self, docs: Iterable[dict[str, Any]]) -> list[bytes]:
        with self.env.begin(None, None, True) as txn:
            return [self._put(txn, d) for d in docs]

    def insert_one(self, doc: dict[str, Any]) -> bytes:
        with self.env.begin(None, None, True) as txn:
            return self._put(txn, doc)

    def get(self, doc_id: bytes) -> Any:
        with self.env.begin() as txn:
            raw = txn.get(doc_id, None, self.docs)
            return None if raw is None else self.decode(raw)

    def eq(self, field: str, value: Any) -> list[Any]:
        prefix = _index_value(value)
        out = []
        with self.env.begin() as txn:
            cursor = txn.cursor(self.indexes[field])
            if cursor.set_range(prefix):
                for key in cursor.iternext(True, False):
                    if not key.startswith(prefix):
                        break
                    out.append(self.decode(txn.get(key[-16:], None, self.docs)))
        return out

    def range_first(self, field: str, low: Any, n: int) -> list[Any]:
        out = []
        with self.env.begin() as txn:
            cursor = txn.cursor(self.indexes[field])
            if cursor.set_range(_index_value(low)):
                for key in cursor.iternext(True, False):
                    out.append(self.decode(txn.get(key[-16:], None, self.docs)))
                    if len(out) >= n:
                        break
        return out

    def page_after(self, field: str, after: bytes | None, size: int) -> tuple[list[Any], Any]:
        """``size`` documents after index key ``after``; returns (docs, last key)."""
        out = []
        last = after
        with self.env.begin() as txn:
            cursor = txn.cursor(self.indexes[field])
            found = cursor.set_range(after + b"\x00") if after else cursor.first()
            if found:
                for key in cursor.iternext(True, False):
                    last = key
                    out.append(self.decode(txn.get(last[-16:], None, self.docs)))
                    if len(out) >= size:
                        break
        return out, last
