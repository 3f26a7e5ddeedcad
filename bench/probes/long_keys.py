"""What index keys longer than LMDB's 511 bytes cost when many share one entry. A probe.

Keys over 511 bytes live in the entry of their first 511 bytes (``engine/longkeys.py``),
whose list a write rewrites and a scan decodes: documents with the same long indexed
value share one entry. This times, as their number grows (100, 1,000, 5,000), an insert
of one more such document, an insert of a short value beside them, and a ``take(10)``
of them through the index; then the same for documents whose values are distinct, 50 KB
each, and share their first 520 characters (100 and 400 of them: a write rewrites the
rest of every one of them), with a ``first()`` through the index.

Run: ``.venv/bin/python bench/probes/long_keys.py``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from engine import Engine, define_schema, define_table, v


def main() -> None:
    schema = define_schema({"t": define_table({"s": v.string()}).index("by_s", ["s"])})
    long = "u" * 600
    with (
        tempfile.TemporaryDirectory() as folder,
        Engine.open(folder, schema=schema, durability="none") as engine,
    ):
        count = 0
        for target in (100, 1_000, 5_000):
            while count < target - 50:
                engine.run(lambda ctx: [ctx.db.insert("t", {"s": long}) for _ in range(50)])
                count += 50
            start = time.perf_counter()
            for _ in range(50):
                engine.run(lambda ctx: ctx.db.insert("t", {"s": long}))
            count += 50
            insert = (time.perf_counter() - start) / 50
            start = time.perf_counter()
            for _ in range(50):
                engine.run(lambda ctx: ctx.db.insert("t", {"s": "short"}))
            short = (time.perf_counter() - start) / 50
            start = time.perf_counter()
            for _ in range(20):
                engine.query(
                    lambda ctx: (
                        ctx.db.query("t").with_index("by_s", lambda q: q.eq("s", long)).take(10)
                    )
                )
            take = (time.perf_counter() - start) / 20
            print(
                f"{count:6d} documents sharing one 600-character value: insert "
                f"{insert * 1e3:.2f} ms (a short value {short * 1e3:.2f} ms), "
                f"take(10) of them {take * 1e3:.2f} ms"
            )

    with (
        tempfile.TemporaryDirectory() as folder,
        Engine.open(folder, schema=schema, durability="none") as engine,
    ):
        prefix = "p" * 520
        times: list[float] = []
        for target in (100, 400):
            while len(times) < target:
                document = {"s": prefix + str(len(times)).zfill(6) + "x" * 50_000}
                start = time.perf_counter()
                engine.run(lambda ctx: ctx.db.insert("t", document))
                times.append(time.perf_counter() - start)
            insert = sorted(times[-21:])[10]
            start = time.perf_counter()
            for _ in range(10):
                engine.query(lambda ctx: ctx.db.query("t").with_index("by_s").first())
            first = (time.perf_counter() - start) / 10
            print(
                f"{target:6d} documents with distinct 50 KB values sharing 520 characters: "
                f"insert {insert * 1e3:.1f} ms (median of the last 21), first() "
                f"{first * 1e3:.1f} ms"
            )


if __name__ == "__main__":
    main()
