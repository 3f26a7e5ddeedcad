"""What index keys longer than LMDB's 511 bytes cost when many share one entry. A probe.

Keys over 511 bytes live in the entry of their first 511 bytes (``engine/longkeys.py``),
whose list a write rewrites and a scan decodes: documents with the same long indexed
value share one entry. This times, as their number grows (100, 1,000, 5,000), an insert
of one more such document, an insert of a short value beside them, and a ``take(10)``
of them through the index.

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


if __name__ == "__main__":
    main()
