"""Queries on N = 100,000 documents with two secondary indexes.

Equality lookup returning ~1% of rows (``city``), the first 100 rows of a range
(``age >= 40``), and point get, for convexlite beside sqlite3 (JSON
expression indexes, WAL) and raw py-lmdb + msgspec, in one run.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from .baselines import RawLmdbStore, SqliteStore, make_documents


def run(report: Any) -> None:
    from engine import Engine, define_schema, define_table, v

    n = 5_000 if report.quick else 100_000
    docs = make_documents(n)
    schema = define_schema(
        {
            "people": define_table(
                {
                    "name": v.string(),
                    "age": v.int64(),
                    "city": v.string(),
                    "score": v.float64(),
                }
            )
            .index("by_city", ["city"])
            .index("by_age", ["age"])
        }
    )
    with tempfile.TemporaryDirectory() as folder:
        with Engine.open(os.path.join(folder, "cl"), schema=schema, durability="none") as engine:
            ids: list[str] = []
            for start in range(0, n, 15_000):
                ids += engine.run(
                    lambda ctx, s=start: [ctx.db.insert("people", d) for d in docs[s : s + 15_000]]
                )
            report.measure(
                "equality, 1% of rows",
                lambda: engine.query(
                    lambda ctx: (
                        ctx.db.query("people")
                        .with_index("by_city", lambda q: q.eq("city", "c7"))
                        .collect()
                    )
                ),
                group="equality lookup (~1% of rows)",
                system="convexlite",
            )
            report.measure(
                "first 100 of a range",
                lambda: engine.query(
                    lambda ctx: (
                        ctx.db.query("people")
                        .with_index("by_age", lambda q: q.gte("age", 40))
                        .take(100)
                    )
                ),
                group="first 100 rows of a range",
                system="convexlite",
            )
            sample = ids[:: max(1, n // 1000)][:1000]
            report.measure(
                "point get",
                lambda: [engine.query(lambda ctx, i=i: ctx.db.get(i)) for i in sample],
                ops_per_call=len(sample),
                group="point get",
                system="convexlite",
            )
        sq = SqliteStore(os.path.join(folder, "s.db"))
        sq_ids = sq.insert_many(docs)[:: max(1, n // 1000)][:1000]
        raw = RawLmdbStore(os.path.join(folder, "raw"), sync=False)
        raw_ids = raw.insert_many(docs)[:: max(1, n // 1000)][:1000]
        for system, store, keys in (("sqlite3 WAL NORMAL", sq, sq_ids), ("raw lmdb", raw, raw_ids)):
            report.measure(
                "equality, 1% of rows",
                lambda s=store: s.eq("city", "c7"),
                group="equality lookup (~1% of rows)",
                system=system,
            )
            report.measure(
                "first 100 of a range",
                lambda s=store: s.range_first("age", 40, 100),
                group="first 100 rows of a range",
                system=system,
            )
            report.measure(
                "point get",
                lambda s=store, k=keys: [s.get(i) for i in k],
                ops_per_call=len(keys),
                group="point get",
                system=system,
            )
