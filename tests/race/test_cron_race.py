"""Crons run each of their runs once with several executors: threads and processes."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

from engine import Crons, Engine, cron_jobs
from tests import app
from tests.app import cronjobs


def every_second() -> Crons:
    crons = cron_jobs()
    crons.interval("every second", cronjobs.record_run, {"cron": "every second"}, seconds=1)
    return crons


def serve(path: str, seconds: float) -> None:
    """Child process: run the background executor (and its crons) for ``seconds``."""
    with Engine.open(path, functions=app, crons=every_second(), durability="none"):
        time.sleep(seconds)


def check_runs(engine: Engine, at_least: int) -> None:
    runs = engine.query(cronjobs.runs)
    assert len(runs) >= at_least
    assert len(set(runs)) == len(runs), f"a run ran twice: {sorted(runs)}"
    assert all(later - earlier >= 1000.0 for earlier, later in zip(runs, runs[1:], strict=False))
    engine.check()


def test_handles_in_threads_run_each_cron_run_once(db_path: Path) -> None:
    handles = [
        Engine.open(db_path, functions=app, crons=every_second(), durability="none")
        for _ in range(3)
    ]
    try:
        time.sleep(2.6)
    finally:
        for handle in handles[1:]:
            handle.close()
    check_runs(handles[0], at_least=2)
    handles[0].close()


def test_processes_run_each_cron_run_once(db_path: Path) -> None:
    with Engine.open(db_path, functions=app, crons=every_second(), durability="none") as engine:
        spawn = multiprocessing.get_context("spawn")
        children = [spawn.Process(target=serve, args=(str(db_path), 3.0)) for _ in range(2)]
        for child in children:
            child.start()
        for child in children:
            child.join(60)
            assert child.exitcode == 0
        check_runs(engine, at_least=2)
