"""The benchmark harness: time callables, print percentile tables, save JSON results.

Every benchmark module in ``bench/`` defines ``run(report)`` and calls
``report.measure(...)`` for convexlite and for each baseline *in the same run*,
so ratios are taken on one machine at one moment. ``report.quick`` asks for
small sizes (used by the test suite's smoke run).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sqlite3
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Measurement", "Report", "machine"]

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Measurement:
    """One timed workload: ops/s and per-operation latency percentiles (µs)."""

    name: str
    system: str
    group: str
    ops_per_sec: float
    p50_us: float
    p90_us: float
    p99_us: float
    calls: int
    ops: int


def _percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions: dict[str, str] = {
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
    }
    for module in ("lmdb", "msgspec"):
        try:
            versions[module] = __import__(module).__version__
        except (ImportError, AttributeError):
            versions[module] = "?"
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "versions": versions,
    }


@dataclass
class Report:
    """Collects measurements and notes for one benchmark run."""

    name: str
    quick: bool = False
    measurements: list[Measurement] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)
    started: str = field(
        default_factory=lambda: _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    )

    def measure(
        self,
        name: str,
        fn: Callable[[], object],
        *,
        ops_per_call: int = 1,
        seconds: float = 1.0,
        group: str | None = None,
        system: str = "convexlite",
        min_calls: int = 5,
    ) -> Measurement:
        """Call ``fn`` repeatedly for about ``seconds`` (after a warm-up call).

        Latency percentiles are per operation: call time / ``ops_per_call``.
        """
        if self.quick:
            seconds = min(seconds, 0.2)
        fn()  # warm-up
        samples: list[float] = []
        deadline = time.perf_counter() + seconds
        while len(samples) < min_calls or time.perf_counter() < deadline:
            start = time.perf_counter_ns()
            fn()
            samples.append((time.perf_counter_ns() - start) / 1000 / ops_per_call)
            if len(samples) > 1_000_000:
                break
        return self._record(name, system, group or name, samples, ops_per_call)

    def measure_interleaved(
        self,
        name: str,
        fns: dict[str, Callable[[], object]],
        *,
        group: str,
        ops_per_call: int = 1,
        seconds: float = 1.0,
        block: float = 0.0,
    ) -> list[Measurement]:
        """Measure several systems in alternation, round after round.

        For figures that drift over a run (fsync latency on a shared disk, a
        neighbour's load on a shared CPU), so that every system sees the same
        conditions; ``fns`` maps system → call. Each round gives each system
        one call, or with ``block`` > 0 as many calls as fit in ``block``
        seconds (CPU-bound reads: one call at a time would also measure the
        other systems evicting each other's caches).
        """
        if self.quick:
            seconds = min(seconds, 0.2)
            block = min(block, 0.02)
        for fn in fns.values():
            fn()  # warm-up
        samples: dict[str, list[float]] = {system: [] for system in fns}
        deadline = time.perf_counter() + seconds * len(fns)
        while time.perf_counter() < deadline or min(map(len, samples.values())) < 5:
            for system, fn in fns.items():
                out = samples[system]
                block_end = time.perf_counter() + block
                while True:
                    start = time.perf_counter_ns()
                    fn()
                    out.append((time.perf_counter_ns() - start) / 1000 / ops_per_call)
                    if time.perf_counter() >= block_end:
                        break
        return [
            self._record(name, system, group, values, ops_per_call)
            for system, values in samples.items()
        ]

    def _record(
        self, name: str, system: str, group: str, samples: list[float], ops_per_call: int
    ) -> Measurement:
        ordered = sorted(samples)
        total_us = sum(samples) * ops_per_call
        measurement = Measurement(
            name=name,
            system=system,
            group=group,
            ops_per_sec=(len(samples) * ops_per_call) / (total_us / 1e6) if total_us else 0.0,
            p50_us=statistics.median(ordered),
            p90_us=_percentile(ordered, 0.9),
            p99_us=_percentile(ordered, 0.99),
            calls=len(samples),
            ops=len(samples) * ops_per_call,
        )
        self.measurements.append(measurement)
        return measurement

    def note(self, key: str, value: Any) -> None:
        """Record a fact that is not a timing (a rate, a count, a setting)."""
        self.notes[key] = value

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": self.name,
            "started": self.started,
            "quick": self.quick,
            "machine": machine(),
            "measurements": [asdict(m) for m in self.measurements],
            "notes": self.notes,
        }

    def render(self) -> str:
        """Plain-text tables, one per group, with the ratio to convexlite."""
        info = machine()
        lines = [
            f"# {self.name}  ({self.started}{', quick' if self.quick else ''})",
            f"# {info['cpu']} x{info['cores']}, {info['platform']}",
            "# " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()),
            "",
        ]
        groups: dict[str, list[Measurement]] = {}
        for m in self.measurements:
            groups.setdefault(m.group, []).append(m)
        for group, items in groups.items():
            base = next((m for m in items if m.system.startswith("convexlite")), None)
            lines.append(f"## {group}")
            lines.append(
                f"{'system':<24}{'ops/s':>12}{'p50 µs':>10}{'p90 µs':>10}"
                f"{'p99 µs':>10}{'vs convexlite':>15}"
            )
            for m in items:
                ratio = (
                    f"{m.ops_per_sec / base.ops_per_sec:.2f}x"
                    if base is not None and base.ops_per_sec
                    else ""
                )
                lines.append(
                    f"{m.system:<24}{m.ops_per_sec:>12,.0f}{m.p50_us:>10.1f}"
                    f"{m.p90_us:>10.1f}{m.p99_us:>10.1f}{ratio:>15}"
                )
            lines.append("")
        if self.notes:
            lines.append("## notes")
            lines += [f"{k}: {v}" for k, v in self.notes.items()]
        return "\n".join(lines)

    def save(self, folder: Path = RESULTS) -> Path:
        """Write ``<name>-<timestamp>.json`` and ``<name>-latest.json``; return the latter."""
        folder.mkdir(parents=True, exist_ok=True)
        stamp = self.started.replace(":", "").replace("-", "")
        text = json.dumps(self.to_json(), indent=2, sort_keys=True)
        (folder / f"{self.name}-{stamp}.json").write_text(text)
        latest = folder / f"{self.name}-latest.json"
        latest.write_text(text)
        return latest
