"""Vector indexes: exact search and the cost of keeping the index, beside hand-rolled
exact search on LMDB and on sqlite3, in one run.

Documents ``{embedding: D floats (random, length 1), cuisine: one of 100}`` in a
table with ``vector_index("by_embedding", vector_field="embedding", dimensions=D,
filter_fields=["cuisine"])``; queries are other random vectors, the same sequence
for every system. Systems:

- **convexlite action**: the public path, ``engine.action(fn)`` with ``fn`` awaiting
  ``ctx.vector_search(...)`` (an event loop and a worker thread per call, as every
  action): the headline.
- **convexlite vector_search**: :func:`engine.vectors.vector_search` called directly,
  no action around it: the search alone.
- **raw lmdb + numpy**: py-lmdb, key = 16-byte id, value = the float32 vector; one
  read txn, a cursor over every value (then over the keys), ``b"".join``,
  ``np.frombuffer``, cosine scores (the matrix-vector product divided by the row
  norms) and ``argpartition``: the physical limit of exact search on LMDB from Python.
  With a filter, a hand-rolled secondary key (cuisine ‖ id) and a point get per match.
- **sqlite3 + numpy**: a WAL table ``(id TEXT PRIMARY KEY, cuisine TEXT, embedding
  BLOB)`` with an index on ``cuisine``; ``SELECT`` the blobs, the same numpy ranking.

Workloads: top 10 with no filter (every document is a candidate) of 10,000 documents
at 256 dimensions and of 2,000 at 1536 (quick: 1,000 and 200); top 10 with
``q.eq("cuisine", "c3")`` (~1% of the documents); and an insert of 1,000 documents
(256-d) in one transaction into the table with the vector index against the same
table without it, per document, beside raw lmdb and sqlite3 storing the same vectors
(durability off everywhere). Before timing, the top 10 of both convexlite paths must
equal both baselines' in order (as document numbers) and their scores the float64
cosines: the benchmark fails otherwise.
"""

from __future__ import annotations

import itertools
import math
import os
import random
import struct
import tempfile
from array import array
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import lmdb
import numpy as np

from .baselines import connect

LIMIT = 10
CUISINES = 100
FILTER = "c3"
QUERIES = 16

_ID = struct.Struct(">QQ")


def make_vectors(n: int, dimensions: int, seed: int) -> list[list[float]]:
    """``n`` random vectors of length 1 (seeded: every system gets the same)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        vector = [rng.random() * 2 - 1 for _ in range(dimensions)]
        scale = 1 / math.sqrt(sum(x * x for x in vector))
        out.append([x * scale for x in vector])
    return out


def make_documents(n: int, dimensions: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed + 1)
    return [
        {"embedding": vector, "cuisine": f"c{rng.randrange(CUISINES)}"}
        for vector in make_vectors(n, dimensions, seed)
    ]


def top(matrix: Any, query: Sequence[float], limit: int = LIMIT) -> list[int]:
    """Rows of ``matrix`` (float32, one vector each) by cosine similarity to ``query``,
    the best ``limit``, best first. The row normalization is folded into the scores
    (one division per row, not per element)."""
    q = np.asarray(query, dtype=np.float32)
    q /= np.linalg.norm(q)
    scores = (matrix @ q) / np.sqrt(np.einsum("ij,ij->i", matrix, matrix))
    if len(scores) > limit:
        best = np.argpartition(-scores, limit)[:limit]
        return [int(i) for i in best[np.argsort(-scores[best])]]
    return [int(i) for i in np.argsort(-scores)]


class RawLmdbVectors:
    """py-lmdb: ``vectors`` (16-byte id → float32 vector), ``by_cuisine`` (cuisine ‖
    0x00 ‖ id → empty). Positional py-lmdb arguments, as :mod:`bench.baselines`."""

    def __init__(self, path: str, dimensions: int) -> None:
        os.makedirs(path, exist_ok=True)
        self.env = lmdb.open(path, map_size=8 << 30, max_dbs=4, sync=False, metasync=False)
        self.vectors = self.env.open_db(b"vectors")
        self.by_cuisine = self.env.open_db(b"by_cuisine")
        self.dimensions = dimensions
        self.next = 0

    def insert_many(self, docs: Iterable[dict[str, Any]]) -> list[bytes]:
        ids = []
        with self.env.begin(None, None, True) as txn:
            for doc in docs:
                self.next += 1
                doc_id = _ID.pack(0, self.next)
                vector = array("f", doc["embedding"]).tobytes()
                txn.put(doc_id, vector, True, True, False, self.vectors)
                key = doc["cuisine"].encode() + b"\x00" + doc_id
                txn.put(key, b"", True, True, False, self.by_cuisine)
                ids.append(doc_id)
        return ids

    def search(self, query: Sequence[float], limit: int = LIMIT) -> list[bytes]:
        # Values as bytes (py-lmdb's default): faster here than its zero-copy buffers.
        with self.env.begin() as txn:
            cursor = txn.cursor(self.vectors)
            blob = b"".join(cursor.iternext(False, True))
            cursor.first()
            ids = b"".join(cursor.iternext(True, False))
        matrix = np.frombuffer(blob, dtype="<f4").reshape(-1, self.dimensions)
        return [ids[16 * i : 16 * i + 16] for i in top(matrix, query, limit)]

    def search_eq(self, query: Sequence[float], cuisine: str, limit: int = LIMIT) -> list[bytes]:
        prefix = cuisine.encode() + b"\x00"
        ids = []
        with self.env.begin() as txn:
            cursor = txn.cursor(self.by_cuisine)
            if cursor.set_range(prefix):
                for key in cursor.iternext(True, False):
                    if not key.startswith(prefix):
                        break
                    ids.append(key[-16:])
            get, vectors = txn.get, self.vectors
            blob = b"".join([get(i, None, vectors) for i in ids])
        matrix = np.frombuffer(blob, dtype="<f4").reshape(-1, self.dimensions)
        return [ids[i] for i in top(matrix, query, limit)]


class SqliteVectors:
    """sqlite3 in WAL mode: ``(id TEXT PRIMARY KEY, cuisine TEXT, embedding BLOB)`` of
    float32, an index on ``cuisine``."""

    def __init__(self, path: str, dimensions: int, synchronous: str = "NORMAL") -> None:
        self.conn = connect(path, synchronous)
        self.conn.execute(
            "CREATE TABLE vectors (id TEXT PRIMARY KEY, cuisine TEXT, embedding BLOB)"
        )
        self.conn.execute("CREATE INDEX by_cuisine ON vectors (cuisine)")
        self.dimensions = dimensions
        self.next = 0

    def insert_many(self, docs: Sequence[dict[str, Any]]) -> list[str]:
        ids = [f"{n:032x}" for n in range(self.next + 1, self.next + 1 + len(docs))]
        self.next += len(docs)
        cur = self.conn.cursor()
        cur.execute("BEGIN")
        cur.executemany(
            "INSERT INTO vectors (id, cuisine, embedding) VALUES (?, ?, ?)",
            [
                (i, d["cuisine"], array("f", d["embedding"]).tobytes())
                for i, d in zip(ids, docs, strict=True)
            ],
        )
        cur.execute("COMMIT")
        return ids

    def _rank(self, rows: list[Any], query: Sequence[float], limit: int) -> list[str]:
        if not rows:
            return []
        ids, blobs = zip(*rows, strict=True)
        matrix = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(-1, self.dimensions)
        return [ids[i] for i in top(matrix, query, limit)]

    def search(self, query: Sequence[float], limit: int = LIMIT) -> list[str]:
        rows = self.conn.execute("SELECT id, embedding FROM vectors").fetchall()
        return self._rank(rows, query, limit)

    def search_eq(self, query: Sequence[float], cuisine: str, limit: int = LIMIT) -> list[str]:
        rows = self.conn.execute(
            "SELECT id, embedding FROM vectors WHERE cuisine = ?", (cuisine,)
        ).fetchall()
        return self._rank(rows, query, limit)


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


class _Convexlite:
    """The two convexlite paths of a search: the public action, the function alone."""

    def __init__(self, engine: Any) -> None:
        from engine.vectors import vector_search

        self.engine = engine
        self.search = vector_search

    def action(self, table: str, vector: list[float], cuisine: str | None) -> Any:
        async def body(ctx: Any) -> Any:
            return await ctx.vector_search(
                table,
                "by_embedding",
                vector=vector,
                limit=LIMIT,
                filter=None if cuisine is None else lambda q: q.eq("cuisine", cuisine),
            )

        return self.engine.action(body)

    def direct(self, table: str, vector: list[float], cuisine: str | None) -> Any:
        return self.search(
            self.engine._db,
            table,
            "by_embedding",
            vector,
            limit=LIMIT,
            filter=None if cuisine is None else lambda q: q.eq("cuisine", cuisine),
        )


def _searches(
    report: Any, cl: _Convexlite, folder: str, table: str, dimensions: int, n: int
) -> None:
    """Load ``n`` documents into ``table`` and the baselines, check that every system
    finds the same top 10, then time the searches with and without a filter."""
    docs = make_documents(n, dimensions, seed=dimensions)
    queries = make_vectors(QUERIES, dimensions, seed=dimensions + 7)
    # Each system's ids → the documents' numbers: how their results are compared.
    cl_ids: list[str] = []
    for start in range(0, n, 500):  # 500 documents of 1536 floats: under 16 MiB written
        chunk = docs[start : start + 500]
        cl_ids += cl.engine.run(lambda ctx, c=chunk: [ctx.db.insert(table, d) for d in c])
    raw = RawLmdbVectors(os.path.join(folder, f"raw-{dimensions}"), dimensions)
    sq = SqliteVectors(os.path.join(folder, f"sq-{dimensions}.db"), dimensions)
    cl_numbers = {k: i for i, k in enumerate(cl_ids)}
    numbers: dict[str, dict[Any, int]] = {
        "convexlite action": cl_numbers,
        "convexlite vector_search": cl_numbers,
        "raw lmdb + numpy": {k: i for i, k in enumerate(raw.insert_many(docs))},
        "sqlite3 + numpy": {k: i for i, k in enumerate(sq.insert_many(docs))},
    }
    matching = sum(d["cuisine"] == FILTER for d in docs)

    def systems(cuisine: str | None) -> dict[str, Callable[[], Any]]:
        """System → a search of the next query vector (each system walks the sequence)."""
        walks = [itertools.cycle(queries) for _ in range(4)]
        if cuisine is None:
            return {
                "convexlite action": lambda: cl.action(table, next(walks[0]), None),
                "convexlite vector_search": lambda: cl.direct(table, next(walks[1]), None),
                "raw lmdb + numpy": lambda: raw.search(next(walks[2])),
                "sqlite3 + numpy": lambda: sq.search(next(walks[3])),
            }
        return {
            "convexlite action": lambda: cl.action(table, next(walks[0]), cuisine),
            "convexlite vector_search": lambda: cl.direct(table, next(walks[1]), cuisine),
            "raw lmdb + numpy": lambda: raw.search_eq(next(walks[2]), cuisine),
            "sqlite3 + numpy": lambda: sq.search_eq(next(walks[3]), cuisine),
        }

    # Correctness, once: the four systems find the same top 10 in the same order (as
    # document numbers), and convexlite's scores are the float64 cosines.
    for cuisine in (None, FILTER):
        checks = systems(cuisine)
        for query in queries[:4]:
            found = {system: search() for system, search in checks.items()}
            ranks = {
                system: [numbers[system][r["_id"] if isinstance(r, dict) else r] for r in results]
                for system, results in found.items()
            }
            expected = ranks["raw lmdb + numpy"]
            wrong = {system: got for system, got in ranks.items() if got != expected}
            if wrong or len(expected) != min(LIMIT, n if cuisine is None else matching):
                raise AssertionError(
                    f"vector search disagrees ({dimensions}-d, filter {cuisine}): raw lmdb + "
                    f"numpy found documents {expected}, others {wrong}"
                )
            for system in ("convexlite action", "convexlite vector_search"):
                for r, number in zip(found[system], ranks[system], strict=True):
                    exact = _cosine(query, docs[number]["embedding"])
                    if abs(r["_score"] - exact) > 1e-4:
                        raise AssertionError(
                            f"{system}: score {r['_score']} for document {number}, whose "
                            f"float64 cosine is {exact}"
                        )

    report.measure_interleaved(
        f"top 10, {dimensions}-d",
        systems(None),
        group=f"top 10 of {n:,} ({dimensions}-d), no filter",
        seconds=2.0,
        block=0.1,
    )
    report.measure_interleaved(
        f"top 10, {dimensions}-d, eq filter",
        systems(FILTER),
        group=f"top 10 of {n:,} ({dimensions}-d), eq filter ({matching} match)",
        seconds=2.0,
        block=0.1,
    )
    report.note(f"documents, {dimensions}-d", n)
    report.note(f"documents matching the filter, {dimensions}-d", matching)


def run(report: Any) -> None:
    from engine import Engine, define_schema, define_table, v

    quick = report.quick
    sizes = {256: 1_000 if quick else 10_000, 1536: 200 if quick else 2_000}
    batch = 200 if quick else 1_000

    def table(dimensions: int | None) -> Any:
        t = define_table({"embedding": v.array(v.float64()), "cuisine": v.string()})
        if dimensions is None:
            return t
        return t.vector_index(
            "by_embedding",
            vector_field="embedding",
            dimensions=dimensions,
            filter_fields=["cuisine"],
        )

    schema = define_schema(
        {
            "foods_256": table(256),
            "foods_1536": table(1536),
            "inserts_indexed": table(256),
            "inserts_plain": table(None),
        }
    )
    with (
        tempfile.TemporaryDirectory() as folder,
        Engine.open(os.path.join(folder, "cl"), schema=schema, durability="none") as engine,
    ):
        cl = _Convexlite(engine)
        for dimensions, n in sizes.items():
            _searches(report, cl, folder, f"foods_{dimensions}", dimensions, n)
        report.note("top 10 checked equal across the 4 systems", "4 queries × 2 filters × 2 sizes")

        # Insert: one transaction of `batch` documents into the table with the vector
        # index and into the same table without it; no durability anywhere.
        docs = make_documents(batch, 256, seed=99)
        raw = RawLmdbVectors(os.path.join(folder, "raw-insert"), 256)
        sq = SqliteVectors(os.path.join(folder, "sq-insert.db"), 256, synchronous="OFF")
        report.measure_interleaved(
            "insert, 256-d",
            {
                "convexlite, vector index": lambda: engine.run(
                    lambda ctx: [ctx.db.insert("inserts_indexed", d) for d in docs]
                ),
                "convexlite, no vector index": lambda: engine.run(
                    lambda ctx: [ctx.db.insert("inserts_plain", d) for d in docs]
                ),
                "raw lmdb nosync": lambda: raw.insert_many(docs),
                "sqlite3 WAL OFF": lambda: sq.insert_many(docs),
            },
            group=f"insert {batch:,} documents (256-d) in one transaction, per document",
            ops_per_call=batch,
            seconds=2.0,
        )
