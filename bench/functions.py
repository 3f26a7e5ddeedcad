"""The function runtime's overhead: calls/s through ``Engine`` beside raw py-lmdb.

An empty query (registered, with argument and return validation, and inline:
``engine.query(lambda ctx: ...)``), a one-document query (``db.get``) and a one-insert mutation
(durability ``none`` and ``full``), each beside the same storage work done
directly on py-lmdb + msgspec, so the runtime's cost shows as a ratio.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from .baselines import RawLmdbStore, make_documents


def run(report: Any) -> None:
    from engine import Engine, MutationCtx, QueryCtx, mutation, query, v

    @query(args={})
    def empty(ctx: QueryCtx) -> None:
        return None

    @query(args={"id": v.string()})
    def one(ctx: QueryCtx, id: str) -> Any:
        return ctx.db.get(id)

    @mutation(args={"doc": v.any()})
    def insert(ctx: MutationCtx, doc: Any) -> str:
        return ctx.db.insert("people", doc)

    quick = getattr(report, "quick", False)
    seconds = 0.5 if quick else 2.0
    docs = make_documents(200)
    with tempfile.TemporaryDirectory() as folder:
        raw = RawLmdbStore(os.path.join(folder, "raw-none"), sync=False)
        raw_ids = [raw.insert_one(d) for d in docs]
        with Engine.open(os.path.join(folder, "none"), durability="none") as engine:
            ids = [engine.mutation(insert, {"doc": d}) for d in docs]
            # Systems in alternation within each group (see queries.py): 0.1 s blocks
            # for CPU-bound calls, one call each per round for durable commits.
            report.measure_interleaved(
                "empty query",
                {
                    "convexlite": lambda: engine.query(empty, {}),
                    "convexlite inline": lambda: engine.query(lambda ctx: None),
                    "python no-op call": lambda: None,
                },
                seconds=seconds,
                block=0.1,
                group="empty query",
            )
            positions = {"convexlite": 0, "raw": 0}

            def one_doc() -> None:
                positions["convexlite"] = (positions["convexlite"] + 1) % len(ids)
                engine.query(one, {"id": ids[positions["convexlite"]]})

            def raw_get() -> None:
                positions["raw"] = (positions["raw"] + 1) % len(raw_ids)
                raw.get(raw_ids[positions["raw"]])

            report.measure_interleaved(
                "one-document query",
                {"convexlite": one_doc, "raw lmdb": raw_get},
                seconds=seconds,
                block=0.1,
                group="one-document query",
            )
            report.measure_interleaved(
                "one-insert mutation",
                {
                    "convexlite none": lambda: engine.mutation(insert, {"doc": docs[0]}),
                    "raw lmdb nosync": lambda: raw.insert_one(docs[0]),
                },
                seconds=seconds,
                block=0.1,
                group="one-insert mutation, durability none",
            )
        raw_sync = RawLmdbStore(os.path.join(folder, "raw-full"), sync=True)
        with Engine.open(os.path.join(folder, "full"), durability="full") as engine:
            report.measure_interleaved(
                "one-insert mutation",
                {
                    "convexlite full": lambda: engine.mutation(insert, {"doc": docs[0]}),
                    "raw lmdb sync": lambda: raw_sync.insert_one(docs[0]),
                },
                seconds=seconds,
                group="one-insert mutation, durability full",
            )
