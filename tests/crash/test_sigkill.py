"""Crash tests: SIGKILL a writer at random moments; every reopen must be intact.

The child inserts 3 rows and bumps a counter per transaction and prints
"ack N" after each commit returns. After the kill, the parent reopens and
checks: Engine.check() passes, every acknowledged batch is present, and no
batch is partial (a transaction is all or nothing).
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from engine import Engine
from tests.crash import kill_worker_after


def kill_after(path: Path, durability: str, delay: float) -> tuple[str, int]:
    """Run the writer ``delay`` seconds past its start, SIGKILL it; return (run id, last acked batch)."""
    out = kill_worker_after(delay, str(path), durability)
    runs = [line.split()[1] for line in out.splitlines() if line.startswith("counter ")]
    acked = [int(line.split()[1]) for line in out.splitlines() if line.startswith("ack ")]
    return (runs[0] if runs else ""), max(acked, default=0)


def verify(path: Path, run: str, acked: int) -> None:
    with Engine.open(path) as engine:
        engine.check()
        per_batch: Counter[tuple[str, int]] = Counter()
        cursor = None
        while True:  # page through: a fast child writes more rows than one read may hold
            page = engine.run(
                lambda ctx, c=cursor: ctx.db.query("rows").paginate({"numItems": 5000, "cursor": c})
            )
            per_batch.update((r["run"], r["batch"]) for r in page["page"])
            if page["isDone"]:
                break
            cursor = page["continueCursor"]
        assert all(n == 3 for n in per_batch.values()), "a transaction was applied in part"
        for state in engine.run(lambda ctx: ctx.db.query("state").collect()):
            # each run of the child has its own counter, bumped in the batches' transactions
            batches = {b for (r, b) in per_batch if r == state["_id"]}
            assert state["batches"] == len(batches)
            assert batches == set(range(1, len(batches) + 1))
            if state["_id"] == run:
                assert state["batches"] >= acked, "an acknowledged transaction was lost"


@pytest.mark.parametrize("durability", ["full", "none"])
def test_sigkill_keeps_every_acknowledged_write(tmp_path: Path, durability: str) -> None:
    rng = random.Random(7)
    path = tmp_path / "db"
    rounds = 4
    total = 0
    for _ in range(rounds):
        run, acked = kill_after(path, durability, rng.uniform(0.35, 1.0))
        verify(path, run, acked)
        total += acked
    assert total > 0, "no round acknowledged a write: nothing was tested"


@pytest.mark.slow
def test_sigkill_many_times(tmp_path: Path) -> None:
    rng = random.Random(11)
    path = tmp_path / "db"
    total = 0
    for _ in range(30):
        run, acked = kill_after(path, "full", rng.uniform(0.05, 1.3))
        verify(path, run, acked)
        total += acked
    assert total > 0, "no round acknowledged a write: nothing was tested"
