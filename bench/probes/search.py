"""What a full-text search index costs: inserts with and without one, and searches. A probe.

Builds two tables of the same 10,000 documents (a ``body`` of 20 words drawn from a
Zipf-like vocabulary of 5,000 words, a ``channel`` among 10), one with a search index
on ``body`` filtered by ``channel`` and one without, and times:

- inserting one document (a mutation each, ``durability="none"``), median of 200, into
  either table once it holds 10,000 documents;
- searches of the indexed table (a query each, median of 30): ``take(10)`` of a common
  word, of a rare word, of two words, of a one-letter prefix, and of a common word in
  one channel (``eq`` on the filter field); ``collect()`` of a rare word.

Run: ``.venv/bin/python bench/probes/search.py``.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from engine import Engine, define_schema, define_table, v

DOCUMENTS = 10_000
WORDS = 5_000


def _vocabulary(rng: random.Random) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    words: set[str] = set()
    while len(words) < WORDS:
        words.add("".join(rng.choice(letters) for _ in range(rng.randint(3, 9))))
    return sorted(words)


def _median(action: Callable[[], Any], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    rng = random.Random(7)
    vocabulary = _vocabulary(rng)
    weights = [1.0 / (rank + 1) for rank in range(WORDS)]  # Zipf: word 0 is the commonest

    def body() -> str:
        return " ".join(rng.choices(vocabulary, weights, k=20))

    fields = {"body": v.string(), "channel": v.string()}
    schema = define_schema(
        {
            "plain": define_table(fields),
            "indexed": define_table(fields).search_index(
                "search_body", search_field="body", filter_fields=["channel"]
            ),
        }
    )
    with (
        tempfile.TemporaryDirectory() as folder,
        Engine.open(folder, schema=schema, durability="none") as engine,
    ):
        documents = [{"body": body(), "channel": f"c{rng.randrange(10)}"} for _ in range(DOCUMENTS)]
        for table in ("plain", "indexed"):
            start = time.perf_counter()
            for i in range(0, DOCUMENTS, 100):
                batch = documents[i : i + 100]
                engine.run(lambda ctx: [ctx.db.insert(table, d) for d in batch])
            load = time.perf_counter() - start
            print(f"loading 10,000 documents into {table!r} (100 a mutation): {load:.2f} s")
        for table in ("plain", "indexed"):
            extra = [{"body": body(), "channel": "c0"} for _ in range(200)]
            rows = iter(extra)
            insert = _median(lambda: engine.run(lambda ctx: ctx.db.insert(table, next(rows))), 200)
            print(f"insert one document into {table!r}: {insert * 1e3:.3f} ms (median of 200)")

        def search(text: str, n: int | None = 10, channel: str | None = None) -> Any:
            def run(ctx: Any) -> Any:
                query = ctx.db.query("indexed").with_search_index(
                    "search_body",
                    lambda q: (
                        q.search("body", text)
                        if channel is None
                        else q.search("body", text).eq("channel", channel)
                    ),
                )
                return query.collect() if n is None else query.take(n)

            return engine.query(run)

        common, rare = vocabulary[0], vocabulary[-1]
        matches = {
            word: sum(word in d["body"].split() for d in documents) for word in (common, rare)
        }
        cases = [
            (f"take(10) of a common word ({matches[common]} documents)", lambda: search(common)),
            (f"take(10) of a rare word ({matches[rare]} documents)", lambda: search(rare)),
            ("take(10) of the two", lambda: search(f"{common} {rare}")),
            ("take(10) of a one-letter prefix", lambda: search("b")),
            ("take(10) of the common word in one channel", lambda: search(common, 10, "c3")),
            ("collect() of the rare word", lambda: search(rare, None)),
        ]
        for label, action in cases:
            print(f"{label}: {_median(action, 30) * 1e3:.2f} ms (median of 30)")


if __name__ == "__main__":
    main()
