"""How close can one engine query per point get come to raw py-lmdb? A floor, measured.

Not a benchmark with baselines (``python -m bench storage`` is): a probe that times,
in one process and on one database,

- ``raw``: py-lmdb + msgspec, one read txn, one ``get``, one decode (``RawLmdbStore.get``);
- ``skeleton``: the fewest Python steps a query call could take on convexlite's own
  storage and objects: take a reader slot through the storage gate, read the catalog
  from its cache, make a context, a reader and a transaction record (three small
  objects), call the function, record the point read, ``get``, decode, release.
  No limits, no checks of closed handles or re-entry, no validation;
- ``engine``: ``engine.query(lambda ctx: ctx.db.get(id))``.

The skeleton is what any design of a per-call transaction pays in CPython, so
``raw / skeleton`` bounds the share of raw speed a query call can reach.

Run: ``.venv/bin/python bench/probes/point_get_floor.py``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import timeit
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from bench.baselines import RawLmdbStore, make_documents
from engine import Engine
from engine.ids import RECENT_IDS
from engine.scans import _decode_document


def main() -> None:
    docs = make_documents(2_000)
    with tempfile.TemporaryDirectory() as folder:
        raw = RawLmdbStore(os.path.join(folder, "raw"), sync=False)
        raw_id = raw.insert_many(docs)[7]
        with Engine.open(os.path.join(folder, "cl"), durability="none") as engine:
            ids = engine.run(lambda ctx: [ctx.db.insert("people", d) for d in docs])
            doc_id = ids[7]
            skeleton = _skeleton(engine)
            expected = engine.query(lambda ctx: ctx.db.get(doc_id))  # decodes the id once
            assert skeleton(lambda ctx: ctx.db.get(doc_id)) == expected
            cases = {
                "raw": lambda: raw.get(raw_id),
                "skeleton": lambda: skeleton(lambda ctx: ctx.db.get(doc_id)),
                "engine": lambda: engine.query(lambda ctx: ctx.db.get(doc_id)),
            }
            best: dict[str, float] = {}
            for _ in range(3):  # alternate: the machine's speed drifts
                for name, call in cases.items():
                    t = min(timeit.repeat(call, number=50_000, repeat=5)) / 50_000
                    best[name] = min(best.get(name, t), t)
    for name, t in best.items():
        print(f"{name:9s} {t * 1e9:6.0f} ns   raw/this {best['raw'] / t:6.1%}")


def _skeleton(engine: Engine) -> Any:
    db = engine._db
    storage = db.storage
    env = storage.env
    documents = storage.documents

    class Record:
        __slots__ = ("catalog", "points", "rtxn")

    class Reader:
        __slots__ = ("_record",)

        def get(self, document_id: str) -> Any:
            record = self._record
            number, internal_id, doc_key = RECENT_IDS[document_id]
            record.points.append(record.catalog.by_id_prefix[number][1] + internal_id)
            return _decode_document(record.rtxn.get(doc_key, None, documents))

    class Ctx:
        __slots__ = ("auth", "db", "now")

    def call(fn: Any) -> Any:
        gate = storage._gate
        gate.active.append(None)
        record = Record()
        rtxn = record.rtxn = env.begin()
        record.catalog = db.catalog_cache[1]
        record.points = []
        try:
            ctx = Ctx()
            reader = ctx.db = Reader()
            reader._record = record
            ctx.now = time.time() * 1000.0
            ctx.auth = None
            return fn(ctx)
        finally:
            rtxn.abort()
            gate.active.pop()

    return call


if __name__ == "__main__":
    main()
