"""Engine.check() while threads write: its report is one snapshot's.

Model: every job a writer schedules is one document of ``_scheduled_functions``.
Invariant: in every report, the jobs counted by state are the documents counted in
that table (the jobs pass and the documents pass read the same snapshot).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from engine import Engine
from tests import app
from tests.app import jobs


def test_check_reports_one_snapshot_while_mutations_schedule_jobs(db_path: Path) -> None:
    with Engine.open(db_path, functions=app, durability="none", scheduler=False) as engine:
        stop = threading.Event()
        writing = threading.Barrier(4)
        errors: list[BaseException] = []

        def write() -> None:
            writing.wait()
            try:
                for _ in range(300):  # bounds the checks' cost: each reads every job
                    if stop.is_set():
                        break
                    engine.mutation(jobs.later, {"text": "x", "delay": 3600.0})
            except BaseException as error:  # reported below
                errors.append(error)

        writers = [threading.Thread(target=write) for _ in range(3)]
        for writer in writers:
            writer.start()
        writing.wait()
        mismatches: list[str] = []
        runs = 0
        deadline = time.monotonic() + 1.0
        try:
            while time.monotonic() < deadline and any(w.is_alive() for w in writers):
                report = engine.check()
                runs += 1
                jobs_counted = sum(report["scheduled_functions"].values())
                documents = report["tables"].get("_scheduled_functions", {}).get("documents", 0)
                if jobs_counted != documents:
                    mismatches.append(f"{jobs_counted} jobs by state, {documents} documents")
        finally:
            stop.set()
            for writer in writers:
                writer.join()
        assert not errors, errors
        assert runs >= 3
        assert not mismatches, f"{len(mismatches)} of {runs} reports: {mismatches[:3]}"
        engine.check()
