"""bench: the harness's timing and every benchmark's smoke run (``--quick`` sizes)."""

from __future__ import annotations

import importlib
import time

import pytest

from bench.__main__ import available, main
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


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in available()],
)
def test_benchmark_runs_and_compares_with_a_baseline(name: str) -> None:
    report = Report(name, quick=True)
    importlib.import_module(f"bench.{name}").run(report)
    assert report.measurements, f"bench {name} measured nothing"
    for measurement in report.measurements:
        assert measurement.ops_per_sec > 0 and measurement.calls > 0, measurement
    systems = {m.system for m in report.measurements}
    assert any(s.startswith("convexlite") for s in systems), systems
    if name not in NO_BASELINE:
        assert len(systems) >= 2, f"bench {name} has no baseline beside convexlite: {systems}"
    assert report.render()  # the table prints
