"""Deep pages: latency of 100-row pages at page 1, 100, 1,000 and 9,000.

convexlite (cursor = a key position: one seek) beside sqlite3 with OFFSET,
sqlite3 with keyset pagination, and raw py-lmdb (a seek to the last key), on
N = 1,000,000 documents (``--quick``: 20,000 and pages scaled down).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import Any

from .baselines import RawLmdbStore, SqliteStore, make_documents


def run(report: Any) -> None:
    from engine import Engine, define_schema, define_table, v

    quick = getattr(report, "quick", False)
    n = 20_000 if quick else 1_000_000
    size = 100
    pages = [1, 10, 100, 190] if quick else [1, 100, 1_000, 9_000]
    seconds = 0.3 if quick else 1.0
    schema = define_schema(
        {
            "people": define_table(
                {
                    "name": v.string(),
                    "age": v.int64(),
                    "city": v.string(),
                    "score": v.float64(),
                }
            ).index("by_age", ["age"])
        }
    )
    docs = make_documents(n)
    with tempfile.TemporaryDirectory() as folder:
        # The baselines first, each positioned at every measured page.
        sqlite = SqliteStore(os.path.join(folder, "s.db"), synchronous="NORMAL", indexes=["age"])
        sqlite.insert_many(docs)

        def keyset_step(after: Any) -> Any:
            rows = sqlite.page_keyset("age", after, size)
            return sqlite.keyset_position(rows[-1]) if rows else after

        keys_at = _positions(pages, keyset_step)
        raw = RawLmdbStore(os.path.join(folder, "raw"), sync=False, indexes=["age"])
        raw.insert_many(docs)
        raw_at = _positions(pages, lambda position: raw.page_after("age", position, size)[1])
        with Engine.open(os.path.join(folder, "cl"), schema=schema, durability="none") as engine:
            for start in range(0, n, 15_000):
                chunk = docs[start : start + 15_000]
                engine.run(lambda ctx, c=chunk: [ctx.db.insert("people", d) for d in c])

            def page_query(cursor: str | None) -> Any:
                return engine.query(
                    lambda ctx: (
                        ctx.db.query("people")
                        .with_index("by_age")
                        .paginate({"numItems": size, "cursor": cursor})
                    )
                )

            cursors = _positions(pages, lambda cursor: page_query(cursor)["continueCursor"])
            # Each page depth: the four systems in alternation, 0.1 s of each per round
            # (separately, a later group could run in a slower stretch: page 9,000 once
            # measured 209 µs against 120-130 µs in a direct, repeated measurement).
            for number in pages:
                report.measure_interleaved(
                    f"page {number}",
                    {
                        "convexlite": lambda c=cursors[number]: page_query(c),
                        "sqlite3 OFFSET": lambda p=number: sqlite.page_offset("age", p - 1, size),
                        "sqlite3 keyset": lambda k=keys_at[number]: sqlite.page_keyset(
                            "age", k, size
                        ),
                        "raw lmdb": lambda k=raw_at[number]: raw.page_after("age", k, size),
                    },
                    seconds=seconds,
                    block=0.1,
                    group=f"page {number}",
                )


def _positions(pages: list[int], step: Callable[[Any], Any]) -> dict[int, Any]:
    """Where each page of ``pages`` starts, walking page by page from None with ``step``."""
    positions: dict[int, Any] = {}
    position: Any = None
    for number in range(1, max(pages) + 1):
        if number in pages:
            positions[number] = position
        position = step(position)
    return positions
