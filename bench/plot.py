"""``python -m bench.plot``: charts and tables in docs/benchmarks.md from bench/results.

Reads every ``bench/results/<name>-latest.json``, draws one PNG per benchmark
into ``docs/img/`` (ops/s per group, one bar per system, log scale), and
rewrites the block between ``<!-- bench:<name> -->`` and
``<!-- /bench:<name> -->`` in ``docs/benchmarks.md`` with the table.
"""

from __future__ import annotations

import json
import re
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
    groups: dict[str, dict[str, float]] = {}
    systems: list[str] = []
    for m in result["measurements"]:
        groups.setdefault(m["group"], {})[m["system"]] = m["ops_per_sec"]
        if m["system"] not in systems:
            systems.append(m["system"])
    if not groups:
        return
    fig, ax = plt.subplots(
        figsize=(10, max(3.0, 0.6 + 0.45 * len(groups) * max(1, len(systems)) / 2))
    )
    height = 0.8 / max(1, len(systems))
    names = list(groups)
    for i, system in enumerate(systems):
        ys = [g + i * height for g in range(len(names))]
        xs = [groups[n].get(system, 0) for n in names]
        ax.barh(ys, xs, height=height, label=system)
    ax.set_yticks([g + 0.4 - height / 2 for g in range(len(names))])
    ax.set_yticklabels(names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("operations per second (log scale, higher is better)")
    ax.set_title(f"python -m bench {result['benchmark']}")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
