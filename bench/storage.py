"""Storage: bulk insert, one document per transaction by durability, point get.

convexlite beside raw py-lmdb + msgspec and sqlite3 (JSON, WAL), in one run.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from .baselines import RawLmdbStore, SqliteStore, make_documents


def run(report: Any) -> None:
    from engine import Engine

    quick = report.quick
    n = 5_000 if quick else 100_000
    docs = make_documents(n)
    one = make_documents(50, seed=2)
    with tempfile.TemporaryDirectory() as folder:
        counter = iter(range(10**9))

        def fresh(kind: str) -> str:
            return os.path.join(folder, f"{kind}-{next(counter)}")

        # Bulk insert: one transaction of N documents (chunks of 15,000 for convexlite,
        # whose transactions are capped at 16,000 writes as in Convex).
        def cl_bulk() -> None:
            with Engine.open(fresh("cl"), durability="none") as engine:
                for start in range(0, n, 15_000):
                    engine.run(
                        lambda ctx, s=start: [
                            ctx.db.insert("people", d) for d in docs[s : s + 15_000]
                        ]
                    )

        report.measure(
            "bulk insert",
            cl_bulk,
            ops_per_call=n,
            seconds=0.1,
            min_calls=1,
            group=f"bulk insert ({n} docs)",
            system="convexlite",
        )
        report.measure(
            "bulk insert",
            lambda: RawLmdbStore(fresh("raw"), sync=False).insert_many(docs),
            ops_per_call=n,
            seconds=0.1,
            min_calls=1,
            group=f"bulk insert ({n} docs)",
            system="raw lmdb",
        )
        report.measure(
            "bulk insert",
            lambda: SqliteStore(fresh("sq") + ".db").insert_many(docs),
            ops_per_call=n,
            seconds=0.1,
            min_calls=1,
            group=f"bulk insert ({n} docs)",
            system="sqlite3 WAL NORMAL",
        )
        # One document per transaction, by durability.
        for mode, raw_sync, sqlite_sync in (
            ("full", True, "FULL"),
            ("normal", True, "NORMAL"),
            ("none", False, "OFF"),
        ):
            group = f"one document per transaction, durability {mode}"
            with Engine.open(fresh("cl"), durability=mode) as engine:  # type: ignore[arg-type]
                report.measure(
                    "insert",
                    lambda e=engine: [
                        e.run(lambda ctx, d=d: ctx.db.insert("people", d)) for d in one
                    ],
                    ops_per_call=len(one),
                    seconds=1.0,
                    group=group,
                    system=f"convexlite {mode}",
                )
            raw = RawLmdbStore(fresh("raw"), sync=raw_sync)
            report.measure(
                "insert",
                lambda r=raw: [r.insert_one(d) for d in one],
                ops_per_call=len(one),
                seconds=1.0,
                group=group,
                system=f"raw lmdb {'sync' if raw_sync else 'nosync'}",
            )
            sq = SqliteStore(fresh("sq") + ".db", synchronous=sqlite_sync)
            report.measure(
                "insert",
                lambda s=sq: [s.insert_one(d) for d in one],
                ops_per_call=len(one),
                seconds=1.0,
                group=group,
                system=f"sqlite3 WAL {sqlite_sync}",
            )
        # Point get by id: one read transaction per get, and many gets in one transaction.
        with Engine.open(fresh("cl"), durability="none") as engine:
            ids: list[str] = []
            for start in range(0, n, 15_000):
                ids += engine.run(
                    lambda ctx, s=start: [ctx.db.insert("people", d) for d in docs[s : s + 15_000]]
                )
            sample = ids[:: max(1, len(ids) // 1000)][:1000]
            report.measure(
                "get",
                lambda: [engine.query(lambda ctx, i=i: ctx.db.get(i)) for i in sample],
                ops_per_call=len(sample),
                group="point get, one transaction each",
                system="convexlite",
            )
            report.measure(
                "get",
                lambda: engine.query(lambda ctx: [ctx.db.get(i) for i in sample]),
                ops_per_call=len(sample),
                group="point get, 1,000 in one transaction",
                system="convexlite",
            )
        raw = RawLmdbStore(fresh("raw"), sync=False)
        raw_ids = raw.insert_many(docs)[:: max(1, n // 1000)][:1000]
        report.measure(
            "get",
            lambda: [raw.get(i) for i in raw_ids],
            ops_per_call=len(raw_ids),
            group="point get, one transaction each",
            system="raw lmdb",
        )

        def raw_batch() -> None:
            with raw.env.begin() as txn:
                for i in raw_ids:
                    raw.decode(txn.get(i, db=raw.docs))

        report.measure(
            "get",
            raw_batch,
            ops_per_call=len(raw_ids),
            group="point get, 1,000 in one transaction",
            system="raw lmdb",
        )
        sq = SqliteStore(fresh("sq") + ".db")
        sq_ids = sq.insert_many(docs)[:: max(1, n // 1000)][:1000]
        report.measure(
            "get",
            lambda: [sq.get(i) for i in sq_ids],
            ops_per_call=len(sq_ids),
            group="point get, one transaction each",
            system="sqlite3 WAL NORMAL",
        )
        report.measure(
            "get",
            lambda: [sq.get(i) for i in sq_ids],
            ops_per_call=len(sq_ids),
            group="point get, 1,000 in one transaction",
            system="sqlite3 WAL NORMAL",
        )
