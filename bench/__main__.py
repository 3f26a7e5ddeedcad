"""``python -m bench <name> [--json] [--quick] [--no-save]``; ``list``; ``all``."""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
from pathlib import Path

from .baselines import close_connections
from .harness import Report

_NOT_BENCHMARKS = {"harness", "baselines", "plot"}


def available() -> list[str]:
    folder = Path(__file__).resolve().parent
    return sorted(
        m.name
        for m in pkgutil.iter_modules([str(folder)])
        if not m.name.startswith("_") and m.name not in _NOT_BENCHMARKS
    )


def run_benchmark(name: str, report: Report) -> None:
    """Run benchmark ``name`` into ``report``, then close the sqlite3 connections its
    baselines opened (see :func:`bench.baselines.connect`)."""
    try:
        importlib.import_module(f"bench.{name}").run(report)
    finally:
        close_connections()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("name", help="a benchmark name, 'list' or 'all'")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results")
    args = parser.parse_args(argv)
    names = available()
    if args.name == "list":
        print("\n".join(names))
        return 0
    chosen = names if args.name == "all" else [args.name]
    for name in chosen:
        if name not in names:
            print(
                f"unknown benchmark {name!r}; choose one of: {', '.join(names)}, all",
                file=sys.stderr,
            )
            return 2
    for name in chosen:
        report = Report(name, quick=args.quick)
        run_benchmark(name, report)
        if not args.no_save:
            report.save()
        print(json.dumps(report.to_json(), indent=2) if args.json else report.render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
