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
            report.measure(
                "empty query",
                lambda: engine.query(empty, {}),
                seconds=seconds,
                group="empty query",
                system="convexlite",
            )
            report.measure(
                "empty query",
                lambda: engine.query(lambda ctx: None),
                seconds=seconds,
                group="empty query",
                system="convexlite inline",
            )
            report.measure(
                "empty query",
                lambda: None,
                seconds=seconds,
                group="empty query",
                system="python no-op call",
            )
            state = {"i": 0}

            def one_doc() -> None:
                state["i"] = (state["i"] + 1) % len(ids)
                engine.query(one, {"id": ids[state["i"]]})

            def raw_get() -> None:
                state["i"] = (state["i"] + 1) % len(raw_ids)
                raw.get(raw_ids[state["i"]])

            report.measure(
                "one-document query",
                one_doc,
                seconds=seconds,
                group="one-document query",
                system="convexlite",
            )
            report.measure(
                "one-document query",
                raw_get,
                seconds=seconds,
                group="one-document query",
                system="raw lmdb",
            )
            report.measure(
                "one-insert mutation",
                lambda: engine.mutation(insert, {"doc": docs[0]}),
                seconds=seconds,
                group="one-insert mutation, durability none",
                system="convexlite none",
            )
            report.measure(
                "one-insert mutation",
                lambda: raw.insert_one(docs[0]),
                seconds=seconds,
                group="one-insert mutation, durability none",
                system="raw lmdb nosync",
            )
        raw_sync = RawLmdbStore(os.path.join(folder, "raw-full"), sync=True)
        with Engine.open(os.path.join(folder, "full"), durability="full") as engine:
            report.measure(
                "one-insert mutation",
                lambda: engine.mutation(insert, {"doc": docs[0]}),
                seconds=seconds,
                group="one-insert mutation, durability full",
                system="convexlite full",
            )
            report.measure(
                "one-insert mutation",
                lambda: raw_sync.insert_one(docs[0]),
                seconds=seconds,
                group="one-insert mutation, durability full",
                system="raw lmdb sync",
            )
