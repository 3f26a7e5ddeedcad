"""A/B the hottest calls between two source trees: alternating runs, medians.

Times, in a fresh process per run and per tree,

- ``get``: ``engine.query(lambda ctx: ctx.db.get(id))``, a point get;
- ``insert``: ``engine.run(lambda ctx: ctx.db.insert("t", {...}))``, a one-insert
  mutation (``durability="none"``: the commit's Python, not the disk);
- and two neighbours of theirs: ``take``, a query's ``take(10)`` (the one-loop read),
  and ``mfirst``, a mutation's ``first()`` (a streaming scan).

Runs alternate between the trees (A then B, B then A, ...), so drift of the machine
(turbo, other load) falls on both alike; each run reports the best of several timeit
repeats in µs per call, and the summary gives each tree's median over the runs and
B/A. Run it once with two copies of one tree first: the B/A of that A/A run is the
noise to read the A/B against (1-3% on a busy two-core machine).

Run: ``.venv/bin/python bench/probes/ab_hot_path.py TREE_A TREE_B [runs]``, each tree
a folder holding ``engine/`` (``git archive HEAD engine | tar -x -C /tmp/a`` makes one).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from typing import Any

_CHILD = r"""
import json, tempfile, timeit
import engine as package
from engine import Engine

with tempfile.TemporaryDirectory() as folder, Engine.open(
    folder + "/db", durability="none"
) as engine:
    ids = engine.run(lambda ctx: [ctx.db.insert("t", {"i": i}) for i in range(100)])
    one = ids[50]
    get = lambda: engine.query(lambda ctx: ctx.db.get(one))
    insert = lambda: engine.run(lambda ctx: ctx.db.insert("t", {"i": 1}))
    take = lambda: engine.query(lambda ctx: ctx.db.query("t").take(10))
    mfirst = lambda: engine.run(lambda ctx: ctx.db.query("t").first())
    for _ in range(2000):  # warm up: caches, specialization
        get()
    for _ in range(300):
        insert()
    out = {
        "engine": package.__file__,
        "get": min(timeit.repeat(get, number=5000, repeat=7)) / 5000 * 1e6,
        "insert": min(timeit.repeat(insert, number=500, repeat=7)) / 500 * 1e6,
        "take": min(timeit.repeat(take, number=2000, repeat=7)) / 2000 * 1e6,
        "mfirst": min(timeit.repeat(mfirst, number=1000, repeat=7)) / 1000 * 1e6,
    }
print(json.dumps(out))
"""


def _run(tree: str) -> dict[str, Any]:
    # -P and the tree as working directory: the child imports the tree's engine, not
    # one from the current folder or an installed copy.
    env = dict(os.environ, PYTHONPATH=tree)
    out = subprocess.run(
        [sys.executable, "-P", "-c", _CHILD],
        env=env,
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    source = result.pop("engine")
    if not source.startswith(os.path.abspath(tree)):
        raise SystemExit(f"the run of {tree} imported the engine of {source}")
    return result


def main() -> None:
    tree_a, tree_b = sys.argv[1], sys.argv[2]
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 6
    results: dict[str, list[dict[str, Any]]] = {"A": [], "B": []}
    for n in range(runs):
        for label, tree in (
            (("A", tree_a), ("B", tree_b))
            if n % 2 == 0
            else (
                ("B", tree_b),
                ("A", tree_a),
            )
        ):
            result = _run(tree)
            results[label].append(result)
            print(
                f"run {n + 1} {label}: get {result['get']:.2f} µs, insert {result['insert']:.2f} µs"
            )
    print(f"A = {tree_a}\nB = {tree_b}")
    for what in results["A"][0]:
        a = statistics.median(r[what] for r in results["A"])
        b = statistics.median(r[what] for r in results["B"])
        print(f"{what:>6}: A {a:.2f} µs, B {b:.2f} µs (median of {runs}), B/A {b / a:.3f}")


if __name__ == "__main__":
    main()
