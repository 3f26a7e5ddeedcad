"""Where a vector search's time goes, and what the action around it adds. A probe.

Loads N documents of D random floats (as ``python -m bench vectors``) and prints:

- the steps of :func:`engine.vectors.vector_search`, timed one after another inside
  each call (its body, calling the module's own helpers, with timestamps between the
  steps; the results are checked equal to the function's, so a change there shows as a
  failure here): query validation, the read txn and catalog, ``_candidates`` (the LMDB
  reads and the copies into the scratch buffer), ``_scores``, ``_top`` and the ids;
- one search called directly, in a pooled thread, in a new thread, through
  ``asyncio.run`` + ``asyncio.to_thread`` (what ``engine.action`` did around
  ``ctx.vector_search`` before it ran searches on ``vectors.executor()``) and through
  ``engine.action``;
- the vector-index upkeep per inserted document (``vectors.prepare`` in the mutation's
  thread, ``vectors.apply`` in the commit leader, and their parts).

Run: ``.venv/bin/python bench/probes/vector_steps.py [D N [filter]]`` (default 256
10000; a third argument searches with ``q.eq("cuisine", "c3")``).
"""

from __future__ import annotations

import asyncio
import collections
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np

from bench.vectors import make_documents, make_vectors
from engine import Engine, commit, define_schema, define_table, v
from engine import vectors as V


def _per_call(fn: Callable[[], Any], seconds: float = 1.5) -> float:
    """Mean µs per call of ``fn`` over about ``seconds``."""
    fn()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        calls += 1
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    dimensions = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    filtered = len(sys.argv) > 3
    table = define_table({"embedding": v.array(v.float64()), "cuisine": v.string()})
    schema = define_schema(
        {
            "foods": table.vector_index(
                "by_embedding",
                vector_field="embedding",
                dimensions=dimensions,
                filter_fields=["cuisine"],
            ),
            "plain": define_table({"embedding": v.array(v.float64()), "cuisine": v.string()}),
        }
    )
    with (
        tempfile.TemporaryDirectory() as folder,
        Engine.open(os.path.join(folder, "cl"), schema=schema, durability="none") as engine,
    ):
        docs = make_documents(n, dimensions, seed=dimensions)
        for start in range(0, n, 500):
            engine.run(
                lambda ctx, c=docs[start : start + 500]: [ctx.db.insert("foods", d) for d in c]
            )
        query = make_vectors(1, dimensions, seed=5)[0]
        db, storage = engine._db, engine._db.storage

        def eq(q: Any) -> Any:
            return q.eq("cuisine", "c3")

        where = eq if filtered else None
        spent: collections.Counter[str] = collections.Counter()

        scratch = bytearray()

        def steps() -> list[dict[str, Any]]:
            nonlocal scratch
            t0 = time.perf_counter()
            vector = V._query_vector(query)
            t1 = time.perf_counter()
            with storage.read() as rtxn:
                found = db.catalog_at(rtxn).tables["foods"]
                index = V._index(found, "foods", "by_embedding")
                count = V._limit(10)
                conditions = V._conditions(index, "foods", where)
                t2 = time.perf_counter()
                found_keys, scratch = V._candidates(
                    rtxn, storage.indexes, index, conditions, scratch
                )
            del rtxn
            t3 = time.perf_counter()
            scores = V._scores(np, scratch, len(found_keys), index, vector)
            t4 = time.perf_counter()
            ranked = V._top(np, scores, lambda i: found_keys[i][5:], count)
            t5 = time.perf_counter()
            out = [
                {
                    "_id": V.ids.encode_id(found.number, found_keys[i][5:]),
                    "_score": float(scores[i]),
                }
                for i in ranked
            ]
            t6 = time.perf_counter()
            for name, took in (
                ("query checks (_query_vector)", t1 - t0),
                ("read txn, catalog, filter", t2 - t1),
                ("_candidates (LMDB reads, copies)", t3 - t2),
                ("_scores (einsum products, lengths)", t4 - t3),
                ("_top (partition, sort)", t5 - t4),
                ("ids", t6 - t5),
            ):
                spent[name] += took
            return out

        def direct() -> Any:
            return V.vector_search(db, "foods", "by_embedding", query, limit=10, filter=where)

        if steps() != direct():
            raise AssertionError("the probe's steps of vector_search no longer match it")
        spent.clear()
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < 3:
            steps()
            calls += 1
        total = sum(spent.values())
        print(f"{n:,} x {dimensions}-d, filter {where is not None}: {total / calls * 1e6:,.0f} µs")
        for name, took in spent.items():
            print(f"  {name:34}{took / calls * 1e6:>9,.0f} µs {took / total:>5.0%}")

        async def body(ctx: Any) -> Any:
            return await ctx.vector_search(
                "foods", "by_embedding", vector=query, limit=10, filter=where
            )

        async def to_thread() -> Any:
            return await asyncio.to_thread(direct)

        def fresh_thread() -> None:
            worker = threading.Thread(target=direct)
            worker.start()
            worker.join()

        with ThreadPoolExecutor(1) as pool:
            print("one search, called:")
            for name, fn in (
                ("directly", direct),
                ("in a pooled thread", lambda: pool.submit(direct).result()),
                ("in a new thread", fresh_thread),
                ("asyncio.run + to_thread", lambda: asyncio.run(to_thread())),
                ("engine.action", lambda: engine.action(body)),
            ):
                print(f"  {name:34}{_per_call(fn):>9,.0f} µs")

        # Upkeep per inserted document: prepare() (in the mutation's thread), apply() (in
        # the commit leader) and their parts, timed by wrapping them.
        batch = make_documents(1000, dimensions, seed=99)
        upkeep: collections.Counter[str] = collections.Counter()

        def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    upkeep[name] += time.perf_counter() - start

            return wrapper

        originals = (
            commit._vectors.prepare,
            commit._vectors.apply,
            V.index_entries,
            V.decode_document,
        )
        commit._vectors.prepare = timed("vectors.prepare (the mutation's thread)", V.prepare)
        commit._vectors.apply = timed("vectors.apply (the leader, write lock)", V.apply)
        V.index_entries = timed("  index_entries: pack, hash", V.index_entries)
        V.decode_document = timed("  decode_document", V.decode_document)
        try:
            with_index = without = 0.0
            for _ in range(10):
                start = time.perf_counter()
                engine.run(lambda ctx: [ctx.db.insert("foods", d) for d in batch])
                with_index += time.perf_counter() - start
                start = time.perf_counter()
                engine.run(lambda ctx: [ctx.db.insert("plain", d) for d in batch])
                without += time.perf_counter() - start
        finally:
            (
                commit._vectors.prepare,
                commit._vectors.apply,
                V.index_entries,
                V.decode_document,
            ) = originals
        docs_timed = 10 * len(batch)
        print(
            f"insert, per document: {with_index / docs_timed * 1e6:.1f} µs with the vector "
            f"index, {without / docs_timed * 1e6:.1f} µs without"
        )
        for name in (
            "vectors.prepare (the mutation's thread)",
            "  decode_document",
            "  index_entries: pack, hash",
            "vectors.apply (the leader, write lock)",
        ):
            print(f"  {name:42}{upkeep[name] / docs_timed * 1e6:>9.1f} µs")


if __name__ == "__main__":
    main()
