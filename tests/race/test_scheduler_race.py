"""Race tests for the scheduler: several executors, every job runs exactly once.

Model: each scheduled mutation inserts one ``job_runs`` row for its key, each
scheduled action does so through ``ctx.run_mutation``. Invariant: once every
job is ``success``, every key has exactly one row. An executor that claimed
outside a transaction, or ran a job without re-checking its state, would show
duplicates.
"""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path
from typing import Any

import pytest

from engine import Engine
from tests import app
from tests.app import jobs


def expected_keys(keys: list[str]) -> dict[str, int]:
    return {**{k: 1 for k in keys}, **{"action:" + k: 1 for k in keys}}


def wait_for_success(engine: Engine, total: int, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        summary: dict[str, Any] = engine.query(jobs.job_summary)
        if summary["states"].get("success", 0) == total:
            return summary
        assert time.monotonic() < deadline, summary
        time.sleep(0.01)


def test_executors_in_threads_run_each_job_once(db_path: Path) -> None:
    handles = [Engine.open(db_path, functions=app, durability="none") for _ in range(4)]
    try:
        keys = [f"k{i}" for i in range(48)]
        for n, start in enumerate(range(0, len(keys), 6)):
            # Every commit wakes all four workers at once: they race for each job.
            handles[n % 4].mutation(jobs.schedule_bumps, {"keys": keys[start : start + 6]})
        summary = wait_for_success(handles[0], 2 * len(keys))
        assert summary["runs"] == expected_keys(keys)
        assert summary["states"] == {"success": 2 * len(keys)}
        handles[0].check()
    finally:
        for handle in handles:
            handle.close()


def run_executor(path: str, total: int) -> None:
    """Child process: run the background executor until ``total`` jobs succeeded."""
    with Engine.open(path, functions=app, durability="none") as engine:
        wait_for_success(engine, total)


def test_executors_in_processes_run_each_job_once(db_path: Path) -> None:
    keys = [f"p{i}" for i in range(30)]
    total = 2 * len(keys)
    with Engine.open(db_path, functions=app, durability="none", scheduler=False) as engine:
        engine.mutation(jobs.schedule_bumps, {"keys": keys[:15]})  # due before any starts
        spawn = multiprocessing.get_context("spawn")
        children = [
            spawn.Process(target=run_executor, args=(str(db_path), total)) for _ in range(3)
        ]
        for child in children:
            child.start()
        time.sleep(0.2)
        engine.mutation(jobs.schedule_bumps, {"keys": keys[15:]})  # found by polling
        for child in children:
            child.join(60)
            assert child.exitcode == 0
        summary = engine.query(jobs.job_summary)
        assert summary["runs"] == expected_keys(keys)
        assert summary["states"] == {"success": total}
        engine.check()


def run_increments(path: str, total: int) -> None:
    """Child process: run the background executor until ``total`` increments landed."""
    with Engine.open(path, functions=app, durability="none") as engine:
        deadline = time.monotonic() + 60
        while engine.query(jobs.shared_count) < total:
            assert time.monotonic() < deadline
            time.sleep(0.01)


def check_increments(engine: Engine, total: int) -> None:
    assert engine.query(jobs.shared_count) == total
    assert engine.query(jobs.job_summary)["states"] == {"success": total}


def test_conflicting_jobs_in_threads_all_land_once(db_path: Path) -> None:
    """Jobs that all conflict: OCC retries them (no budget), none is lost or doubled."""
    handles = [Engine.open(db_path, functions=app, durability="none") for _ in range(4)]
    # No retry budget: every conflict raises OptimisticConcurrencyControlFailure at
    # once, which a scheduled mutation must survive (retry) rather than fail on.
    handles[0]._db.retry.retries = 0
    try:
        handles[0].mutation(jobs.schedule_increments, {"n": 40, "pause": 0.001})
        deadline = time.monotonic() + 30
        while handles[1].query(jobs.shared_count) < 40:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.05)  # a doubled run would land now
        check_increments(handles[2], 40)
    finally:
        for handle in handles:
            handle.close()


@pytest.mark.slow
def test_conflicting_jobs_in_processes_all_land_once(db_path: Path) -> None:
    total = 300
    with Engine.open(db_path, functions=app, durability="none", scheduler=False) as engine:
        spawn = multiprocessing.get_context("spawn")
        children = [
            spawn.Process(target=run_increments, args=(str(db_path), total)) for _ in range(4)
        ]
        for child in children:
            child.start()
        for _ in range(3):
            engine.mutation(jobs.schedule_increments, {"n": total // 3, "pause": 0.0})
            time.sleep(0.1)
        for child in children:
            child.join(120)
            assert child.exitcode == 0
        time.sleep(0.2)
        check_increments(engine, total)
        engine.check()
