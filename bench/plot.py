"""``python -m bench.plot``: charts and tables in docs/benchmarks.md from bench/results.

Reads every ``bench/results/<name>-latest.json``, draws one PNG per benchmark
into ``docs/img/`` (ops/s per group, one bar per system, log scale), and
rewrites the block between ``<!-- bench:<name> -->`` and
``<!-- /bench:<name> -->`` in ``docs/benchmarks.md`` with the table.
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
IMAGES = ROOT / "docs" / "img"
DOC = ROOT / "docs" / "benchmarks.md"


def table(result: dict[str, Any]) -> str:
    rows = [
        "| group | system | ops/s | p50 µs | p99 µs | vs convexlite |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    groups: dict[str, list[dict[str, Any]]] = {}
    for m in result["measurements"]:
        groups.setdefault(m["group"], []).append(m)
    for group, items in groups.items():
        base = next((m for m in items if m["system"].startswith("convexlite")), None)
        for m in items:
            ratio = (
                f"{m['ops_per_sec'] / base['ops_per_sec']:.2f}×"
                if base and base["ops_per_sec"]
                else ""
            )
            rows.append(
                f"| {group} | {m['system']} | {m['ops_per_sec']:,.0f} | "
                f"{m['p50_us']:.1f} | {m['p99_us']:.1f} | {ratio} |"
            )
    if result.get("notes"):
        rows.append("")
        rows += [f"- {k}: **{v}**" for k, v in result["notes"].items()]
    info = result["machine"]
    rows.append("")
    rows.append(
        f"Measured {result['started']} on {info['cpu']} ×{info['cores']}, "
        + ", ".join(f"{k} {v}" for k, v in info["versions"].items())
        + f"; `python -m bench {result['benchmark']}`"
        + (" --quick" if result.get("quick") else "")
        + "."
    )
    return "\n".join(rows)


def chart(result: dict[str, Any], path: Path) -> None:
    """One horizontal bar per measured system, grouped by workload and labelled with
    its ops/s; a system keeps its colour across groups."""
    groups: dict[str, dict[str, float]] = {}
    systems: list[str] = []
    for m in result["measurements"]:
        groups.setdefault(m["group"], {})[m["system"]] = m["ops_per_sec"]
        if m["system"] not in systems:
            systems.append(m["system"])
    if not groups:
        return
    colours = plt.get_cmap("tab20").colors
    colour = {system: colours[i % len(colours)] for i, system in enumerate(systems)}
    bars = sum(len(measured) for measured in groups.values())
    fig, ax = plt.subplots(figsize=(12, max(3.0, 0.8 + 0.32 * bars + 0.3 * len(groups))))
    y = 0.0
    ticks: list[float] = []
    labelled: set[str] = set()
    for measured in groups.values():
        start = y
        for system, ops in measured.items():
            label = None if system in labelled else system
            labelled.add(system)
            ax.barh(y, ops, height=0.8, color=colour[system], label=label)
            ax.text(ops, y, f" {ops:,.0f}", va="center", fontsize=7)
            y += 1
        ticks.append((start + y - 1) / 2)
        y += 0.8  # a gap between groups
    ax.set_yticks(ticks)
    ax.set_yticklabels(names_wrapped(list(groups)), fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlim(right=ax.get_xlim()[1] * 3)  # room for the labels
    ax.set_xlabel("operations per second (log scale, higher is better)")
    ax.set_title(f"python -m bench {result['benchmark']}")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def names_wrapped(names: list[str], width: int = 28) -> list[str]:
    """Group names broken into lines of about ``width`` characters."""
    return [textwrap.fill(name, width) for name in names]


def main() -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    doc = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    for latest in sorted(RESULTS.glob("*-latest.json")):
        result = json.loads(latest.read_text())
        name = result["benchmark"]
        chart(result, IMAGES / f"bench-{name}.png")
        block = (
            f"<!-- bench:{name} -->\n![{name}](img/bench-{name}.png)\n\n"
            f"{table(result)}\n<!-- /bench:{name} -->"
        )
        pattern = re.compile(rf"<!-- bench:{name} -->.*?<!-- /bench:{name} -->", re.S)
        if pattern.search(doc):
            doc = pattern.sub(lambda _: block, doc)
        else:
            doc += f"\n## {name}\n\n{block}\n"
    DOC.write_text(doc)


if __name__ == "__main__":
    main()
