"""bench: the harness's timing and every benchmark's smoke run (``--quick`` sizes)."""

from __future__ import annotations

import sqlite3
import sys
import time
import types
from pathlib import Path
from typing import Any

import pytest

from bench.__main__ import available, main, run_benchmark
from bench.baselines import connect
from bench.harness import Report

#: Benchmarks whose quick run takes more than about a second: run by ``make test-slow``.
SLOW = {"storage", "transactions", "paginate", "auth", "files", "vectors"}
#: Benchmarks with nothing to compare against: no baseline store has subscriptions.
NO_BASELINE = {"subscriptions"}


def test_measure_interleaved_alternates_blocks_of_calls() -> None:
    calls: list[str] = []

    def fast() -> None:
        calls.append("fast")

    def slow() -> None:
        calls.append("slow")
        time.sleep(0.002)

    report = Report("t")
    fast_m, slow_m = report.measure_interleaved(
        "w", {"fast": fast, "slow": slow}, group="g", seconds=0.1, block=0.02
    )
    assert (fast_m.system, slow_m.system) == ("fast", "slow")
    assert fast_m.ops_per_sec > slow_m.ops_per_sec
    assert slow_m.p50_us >= 2000
    # Alternation: several rounds, each a run of calls of one system.
    runs = [calls[0]]
    for system in calls[1:]:
        if system != runs[-1]:
            runs.append(system)
    assert len(runs) >= 4  # warm-up calls, then at least two rounds
    assert calls.count("fast") > 2 * len(runs)  # blocks: many fast calls per round


def test_measure_interleaved_without_block_alternates_call_by_call() -> None:
    calls: list[str] = []
    report = Report("t")
    report.measure_interleaved(
        "w",
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
        group="g",
        seconds=0.01,
    )
    assert calls[:6] == ["a", "b"] * 3
    assert len(calls) >= 10


def test_unknown_benchmark_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["nope", "--no-save"]) == 2
    assert "unknown benchmark 'nope'" in capsys.readouterr().err


def test_the_runner_closes_the_baselines_connections_even_when_a_run_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Left to the garbage collector, a connection warns on Python 3.13
    # (ResourceWarning: unclosed database), in whatever test the collection falls.
    opened: list[sqlite3.Connection] = []

    def run(report: Any) -> None:
        opened.append(connect(str(tmp_path / "a.db"), "OFF"))
        opened.append(connect(str(tmp_path / "b.db"), "FULL"))
        assert opened[0].execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert opened[1].execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
        raise RuntimeError("the benchmark failed")

    monkeypatch.setitem(sys.modules, "bench.failing", types.SimpleNamespace(run=run))
    with pytest.raises(RuntimeError, match="the benchmark failed"):
        run_benchmark("failing", Report("failing", quick=True))
    assert len(opened) == 2
    for conn in opened:
        with pytest.raises(sqlite3.ProgrammingError, match="closed database"):
            conn.execute("SELECT 1")


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in available()],
)
def test_benchmark_runs_and_compares_with_a_baseline(name: str) -> None:
    report = Report(name, quick=True)
    run_benchmark(name, report)
    assert report.measurements, f"bench {name} measured nothing"
    for measurement in report.measurements:
        assert measurement.ops_per_sec > 0 and measurement.calls > 0, measurement
    systems = {m.system for m in report.measurements}
    assert any(s.startswith("convexlite") for s in systems), systems
    if name not in NO_BASELINE:
        assert len(systems) >= 2, f"bench {name} has no baseline beside convexlite: {systems}"
    assert report.render()  # the table prints
