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
        # One document per transaction, by durability; the three systems in
        # alternation (one call of 50 commits each per round), so that fsync latency,
        # which drifts on a shared disk, is the same for all of them. Raw LMDB gets
        # the flags convexlite uses in each mode.
        for mode, raw_flags, raw_label, sqlite_sync in (
            ("full", (True, True), "raw lmdb sync", "FULL"),
            ("normal", (True, False), "raw lmdb sync, no metasync", "NORMAL"),
            ("none", (False, False), "raw lmdb nosync", "OFF"),
        ):
            group = f"one document per transaction, durability {mode}"
            raw = RawLmdbStore(fresh("raw"), sync=raw_flags[0], metasync=raw_flags[1])
            sq = SqliteStore(fresh("sq") + ".db", synchronous=sqlite_sync)
            with Engine.open(fresh("cl"), durability=mode) as engine:  # type: ignore[arg-type]
                report.measure_interleaved(
                    "insert",
                    {
                        f"convexlite {mode}": lambda e=engine: [
                            e.run(lambda ctx, d=d: ctx.db.insert("people", d)) for d in one
                        ],
                        raw_label: lambda r=raw: [r.insert_one(d) for d in one],
                        f"sqlite3 WAL {sqlite_sync}": lambda s=sq: [s.insert_one(d) for d in one],
                    },
                    ops_per_call=len(one),
                    seconds=1.0,
                    group=group,
                )
            raw.env.close()
        # Point get by id: one read transaction per get, and many gets in one
        # transaction; in alternation, 0.1 s of each system per round (see queries.py).
        raw = RawLmdbStore(fresh("raw"), sync=False)
        raw_ids = raw.insert_many(docs)[:: max(1, n // 1000)][:1000]
        sq = SqliteStore(fresh("sq") + ".db")
        sq_ids = sq.insert_many(docs)[:: max(1, n // 1000)][:1000]

        def raw_batch() -> None:
            with raw.env.begin() as txn:
                for i in raw_ids:
                    raw.decode(txn.get(i, db=raw.docs))

        with Engine.open(fresh("cl"), durability="none") as engine:
            ids: list[str] = []
            for start in range(0, n, 15_000):
                ids += engine.run(
                    lambda ctx, s=start: [ctx.db.insert("people", d) for d in docs[s : s + 15_000]]
                )
            sample = ids[:: max(1, len(ids) // 1000)][:1000]
            report.measure_interleaved(
                "get",
                {
                    "convexlite": lambda: [
                        engine.query(lambda ctx, i=i: ctx.db.get(i)) for i in sample
                    ],
                    "raw lmdb": lambda: [raw.get(i) for i in raw_ids],
                    "sqlite3 WAL NORMAL": lambda: [sq.get(i) for i in sq_ids],
                },
                ops_per_call=len(sample),
                group="point get, one transaction each",
                seconds=2.0,
                block=0.1,
            )
            report.measure_interleaved(
                "get",
                {
                    "convexlite": lambda: engine.query(lambda ctx: [ctx.db.get(i) for i in sample]),
                    "raw lmdb": raw_batch,
                    # sqlite3 in autocommit: each SELECT is its own read transaction, and
                    # an explicit one does not make its point reads cheaper.
                    "sqlite3 WAL NORMAL": lambda: [sq.get(i) for i in sq_ids],
                },
                ops_per_call=len(sample),
                group="point get, 1,000 in one transaction",
                seconds=2.0,
                block=0.1,
            )
