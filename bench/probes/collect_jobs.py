"""What deleting completed scheduled jobs costs (the 7-day retention), measured.

Times, on a database of the test app's jobs (durability ``none``, no background worker):

- the sweep ``finish_*`` makes at every call (``collect_completed(full=False)``: the
  ``by_state`` ranges of the completed states) when nothing is old enough, with no jobs
  and beside 10,000 recently completed ones (p50 of 200 calls);
- deleting 10,000 jobs completed longer ago than the retention (the clock is passed in).

Run: ``.venv/bin/python bench/probes/collect_jobs.py``.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from engine import Engine
from tests import app
from tests.app import jobs


def main() -> None:
    with (
        tempfile.TemporaryDirectory() as folder,
        Engine.open(folder, functions=app, durability="none", scheduler=False) as engine,
    ):
        executor = engine._executor
        assert executor is not None
        for count in (0, 10_000):
            for _ in range(count // 1000):
                engine.run(
                    lambda ctx: [
                        ctx.scheduler.run_after(0, jobs.write_note, {"text": "x"})
                        for _ in range(1000)
                    ]
                )
            if count:
                engine.finish_scheduled_functions(timeout=300)
            samples = []
            for _ in range(200):
                start = time.perf_counter()
                executor.collect_completed(full=False)
                samples.append(time.perf_counter() - start)
            print(
                f"{count:6d} recent completed jobs: finish_*'s sweep, nothing old, "
                f"p50 {statistics.median(samples) * 1e6:.0f} µs"
            )
        later = time.time() * 1000.0 + executor.completed_job_retention * 1000.0 + 1000.0
        start = time.perf_counter()
        deleted = executor.collect_completed(now=later)
        seconds = time.perf_counter() - start
        print(f"deleted {deleted} old jobs in {seconds:.2f} s ({deleted / seconds:,.0f}/s)")
        engine.check()


if __name__ == "__main__":
    main()
