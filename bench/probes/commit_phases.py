"""Where one thread's mutation spends its time, by phase, in one durability mode.

Wraps ``Storage.write`` to timestamp four points of each ``engine.run`` that
inserts one document: before the write txn (the mutation's Python, the commit
request), the txn's begin, the group's apply (validation and puts), the LMDB
commit (the flushes in ``full`` mode), and after it (waking, returning). Run it
in ``full`` and in ``none`` mode to see the same Python cost more right after a
flush.

Run: ``.venv/bin/python bench/probes/commit_phases.py full|normal|none [mutations]``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import engine.storage as storage_module
from engine import Engine

PHASES = ("before", "begin", "apply", "commit", "after", "total")


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "full"
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 1500
    marks: dict[str, float] = {}
    real_write = storage_module.Storage.write

    def timed_write(self: Any, fn: Any) -> Any:
        marks["write"] = time.perf_counter()

        def inner(txn: Any) -> Any:
            marks["applying"] = time.perf_counter()
            result = fn(txn)
            marks["applied"] = time.perf_counter()
            return result

        result = real_write(self, inner)
        marks["committed"] = time.perf_counter()
        return result

    storage_module.Storage.write = timed_write  # type: ignore[method-assign]
    samples: dict[str, list[float]] = {phase: [] for phase in PHASES}
    document = {"name": "user1", "age": 5, "city": "c7", "score": 0.5}
    with (
        tempfile.TemporaryDirectory() as folder,
        Engine.open(os.path.join(folder, "db"), durability=mode) as engine,  # type: ignore[arg-type]
    ):
        for i in range(count):
            started = time.perf_counter()
            engine.run(lambda ctx: ctx.db.insert("people", document))
            ended = time.perf_counter()
            if i < count // 5:
                continue  # warm-up
            samples["before"].append(marks["write"] - started)
            samples["begin"].append(marks["applying"] - marks["write"])
            samples["apply"].append(marks["applied"] - marks["applying"])
            samples["commit"].append(marks["committed"] - marks["applied"])
            samples["after"].append(ended - marks["committed"])
            samples["total"].append(ended - started)
    for phase in PHASES:
        values = sorted(samples[phase])
        p50 = values[len(values) // 2] * 1e6
        mean = sum(values) / len(values) * 1e6
        print(f"{mode} {phase:7s} p50 {p50:7.1f} µs  mean {mean:7.1f} µs")


if __name__ == "__main__":
    main()
