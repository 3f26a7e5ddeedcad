"""Crash tests for group commits and scheduled jobs: SIGKILL a process whose threads
commit at once, or whose executor runs the jobs it keeps scheduling; reopen and check.

Threads: after each kill, ``Engine.check()`` passes, every transaction is whole (2
rows per batch), each thread's counter equals its batches (1..n, no gap), and no
acknowledged batch is lost. Jobs: no job ran twice at any reopen, and once the jobs
left behind are run, every acknowledged mutation job ran exactly once.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from engine import Engine
from tests import app
from tests.crash import kill_worker_after


def _rows(engine: Engine) -> Counter[tuple[str, int]]:
    """(counter id, batch) → rows, paged (the table outgrows one function's reads)."""
    rows: Counter[tuple[str, int]] = Counter()
    cursor = None
    while True:
        page = engine.run(
            lambda ctx, c=cursor: ctx.db.query("rows").paginate({"numItems": 4000, "cursor": c})
        )
        rows.update((r["c"], r["k"]) for r in page["page"])
        if page["isDone"]:
            return rows
        cursor = page["continueCursor"]


def thread_rounds(path: Path, durability: str, kills: int, seed: int) -> int:
    """``kills`` rounds of 4 writer threads SIGKILLed; returns the acknowledged batches."""
    rng = random.Random(seed)
    total = 0
    for _ in range(kills):
        out = kill_worker_after(
            rng.uniform(0.0, 0.4), "thread_writer", str(path), durability, "4", after="opened"
        )
        ids = next(line.split()[1:] for line in out.splitlines() if line.startswith("ids "))
        acked: Counter[int] = Counter()
        for line in out.splitlines():
            if line.startswith("ack "):
                _, t, k = line.split()
                acked[int(t)] = max(acked[int(t)], int(k))
                total += 1
        with Engine.open(path, durability=durability) as engine:  # type: ignore[arg-type]
            engine.check()
            rows = _rows(engine)
            assert all(n == 2 for n in rows.values()), "a transaction was applied in part"
            for t, counter in enumerate(ids):
                n = engine.run(lambda ctx, c=counter: ctx.db.get(c))["n"]
                assert {k for (c, k) in rows if c == counter} == set(range(1, n + 1))
                assert n >= acked[t], f"thread {t}: batch {acked[t]} was acknowledged, lost"
    return total


def test_killed_group_commits_keep_every_acknowledged_write(tmp_path: Path) -> None:
    assert thread_rounds(tmp_path / "db", "full", 2, 2) > 0, "nothing was acknowledged"


@pytest.mark.slow
@pytest.mark.parametrize("durability", ["full", "normal", "none"])
def test_killed_group_commits_many_times(tmp_path: Path, durability: str) -> None:
    assert thread_rounds(tmp_path / "db", durability, 30, 3) > 0, "nothing was acknowledged"


def _runs(engine: Engine) -> Counter[str]:
    return Counter(engine.run(lambda ctx: [r["key"] for r in ctx.db.query("job_runs").collect()]))


def job_rounds(path: Path, kills: int, seed: int) -> dict[str, Any]:
    """``kills`` rounds of a process scheduling and running jobs SIGKILLed; then the
    jobs left run to the end. Returns the job states."""
    rng = random.Random(seed)
    acked: list[str] = []
    for round_ in range(kills):
        out = kill_worker_after(
            rng.uniform(0.0, 0.5), "job_writer", str(path), f"r{round_}", after="opened"
        )
        acked += [
            key
            for line in out.splitlines()
            if line.startswith("scheduled ")
            for key in line.split()[1:]
        ]
        with Engine.open(path, functions=app, durability="full", scheduler=False) as engine:
            engine.check()
            twice = {key: n for key, n in _runs(engine).items() if n > 1}
            assert not twice, f"jobs ran more than once: {twice}"
    assert acked, "no job was acknowledged: nothing was tested"
    with Engine.open(path, functions=app, durability="full", scheduler=False) as engine:
        engine.finish_scheduled_functions(timeout=60)
        report = engine.check()
        runs = _runs(engine)
        assert [key for key in acked if runs[key] != 1] == []  # mutation jobs: exactly once
        assert max(runs.values()) == 1  # action jobs: at most once
        return dict(report["scheduled_functions"])


def test_killed_scheduler_runs_each_mutation_job_once(tmp_path: Path) -> None:
    states = job_rounds(tmp_path / "db", 2, 5)
    assert set(states) <= {"success", "failed"}, states


@pytest.mark.slow
def test_killed_scheduler_many_times(tmp_path: Path) -> None:
    states = job_rounds(tmp_path / "db", 25, 6)
    assert set(states) <= {"success", "failed"}, states
