"""Durable commits/s of convexlite with N threads inserting for S seconds.

A probe for comparing two versions of the committer by hand (run it on each,
alternating, several times: the disk's flush latency drifts within minutes);
``python -m bench transactions`` is the benchmark with baselines.

Run: ``.venv/bin/python bench/probes/commit_threads.py [threads] [seconds]``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from engine import Engine


def main() -> None:
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 16
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
    with (
        tempfile.TemporaryDirectory() as folder,
        Engine.open(os.path.join(folder, "db"), durability="full") as engine,
    ):
        stop = time.perf_counter() + seconds
        counts = [0] * threads

        def work(t: int) -> None:
            done = 0
            while time.perf_counter() < stop:
                engine.run(lambda ctx: ctx.db.insert("people", {"name": f"u{t}", "n": done}))
                done += 1
            counts[t] = done

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(work, range(threads)))
        print(f"{threads} threads, {seconds:g} s: {sum(counts) / seconds:,.0f} durable commits/s")


if __name__ == "__main__":
    main()
