"""File storage: storing and reading files of 4 KiB, 256 KiB and 4 MiB.

convexlite (``Engine.store_file`` / ``get_file``: a ``_storage`` row and the bytes
in 256 KiB chunks, written in one LMDB commit; the SHA-256 Convex records is
computed on store) beside sqlite3 (one BLOB column, WAL) and raw py-lmdb (one
``put`` of the whole value: the physical limit), each with durability off
(``none``, ``synchronous=OFF``, ``sync=False``) so the figures are the code's,
not the disk's; and one durable store per system (``full``, ``FULL``,
``sync=True``). Systems alternate within each group.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import lmdb

from .baselines import connect


class _SqliteFiles:
    def __init__(self, path: str, synchronous: str) -> None:
        self.conn = connect(path, synchronous)
        self.conn.execute("CREATE TABLE files (id INTEGER PRIMARY KEY, data BLOB)")

    def store(self, data: bytes) -> int:
        cursor = self.conn.execute("INSERT INTO files (data) VALUES (?)", (data,))
        return int(cursor.lastrowid or 0)

    def get(self, file_id: int) -> bytes:
        row = self.conn.execute("SELECT data FROM files WHERE id = ?", (file_id,)).fetchone()
        return bytes(row[0])


class _RawLmdbFiles:
    def __init__(self, path: str, sync: bool) -> None:
        os.makedirs(path, exist_ok=True)
        self.env = lmdb.open(path, map_size=8 << 30, max_dbs=2, sync=sync, metasync=sync)
        self.db = self.env.open_db(b"files")
        self.next = 0

    def store(self, data: bytes) -> bytes:
        self.next += 1
        key = self.next.to_bytes(8, "big")
        with self.env.begin(None, None, True) as txn:
            txn.put(key, data, True, True, False, self.db)
        return key

    def get(self, key: bytes) -> bytes:
        with self.env.begin() as txn:
            return txn.get(key, None, self.db)  # type: ignore[no-any-return]


def run(report: Any) -> None:
    from engine import Engine

    quick = getattr(report, "quick", False)
    seconds = 0.5 if quick else 2.0
    sizes = {"4 KiB": 4 << 10, "256 KiB": 256 << 10, "4 MiB": 4 << 20}
    with tempfile.TemporaryDirectory() as folder:
        engine = Engine.open(os.path.join(folder, "cl"), durability="none")
        durable = Engine.open(os.path.join(folder, "cl-full"), durability="full")
        sqlite = _SqliteFiles(os.path.join(folder, "s.db"), "OFF")
        sqlite_full = _SqliteFiles(os.path.join(folder, "s-full.db"), "FULL")
        raw = _RawLmdbFiles(os.path.join(folder, "raw"), sync=False)
        raw_full = _RawLmdbFiles(os.path.join(folder, "raw-full"), sync=True)
        try:
            for label, size in sizes.items():
                data = os.urandom(size)
                report.measure_interleaved(
                    f"store {label}",
                    {
                        "convexlite none": lambda d=data: engine.store_file(d),
                        "sqlite3 WAL OFF": lambda d=data: sqlite.store(d),
                        "raw lmdb no sync": lambda d=data: raw.store(d),
                    },
                    group=f"store a {label} file",
                    seconds=seconds,
                    block=0.1,
                )
                ids = (engine.store_file(data), sqlite.store(data), raw.store(data))
                report.measure_interleaved(
                    f"get {label}",
                    {
                        "convexlite": lambda i=ids[0]: engine.get_file(i),
                        "sqlite3 WAL": lambda i=ids[1]: sqlite.get(i),
                        "raw lmdb": lambda i=ids[2]: raw.get(i),
                    },
                    group=f"read a {label} file",
                    seconds=seconds,
                    block=0.1,
                )
            data = os.urandom(sizes["256 KiB"])
            report.measure_interleaved(
                "durable store 256 KiB",
                {
                    "convexlite full": lambda: durable.store_file(data),
                    "sqlite3 WAL FULL": lambda: sqlite_full.store(data),
                    "raw lmdb sync": lambda: raw_full.store(data),
                },
                group="store a 256 KiB file, durably",
                seconds=seconds,
            )
        finally:
            engine.close()
            durable.close()
