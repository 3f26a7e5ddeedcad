"""Subscriptions: invalidation cost per commit with many open, and delivery latency.

- 10,000 subscriptions on distinct documents (``--quick``: 1,000); a commit
  touching one document: the invalidation work (log keys → affected queries,
  :class:`engine.intervals.IntervalIndex`) and the number of queries re-run.
- End-to-end latency from commit to delivery, in-process (the mutation call
  returns after delivery: read-your-writes) and cross-process (another
  process commits; delivery follows the log poll), median and p99.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import tempfile
import threading
import time
from typing import Any

from engine import Engine, QueryCtx, query, v


@query(args={"id": v.string()})
def read_one(ctx: QueryCtx, id: str) -> Any:
    doc = ctx.db.get(id)
    return None if doc is None else doc["t"]


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _writer(path: str, doc_id: str, count: int) -> None:
    with Engine.open(path, durability="none") as engine:
        for _ in range(count):
            engine.run(lambda ctx: ctx.db.patch(doc_id, {"t": time.time()}))
            time.sleep(0.01)


def run(report: Any) -> None:
    quick = getattr(report, "quick", False)
    n = 1_000 if quick else 10_000
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "db")
        with Engine.open(path, durability="none") as engine:
            ids: list[str] = []
            for start in range(0, n, 5_000):
                ids += engine.run(
                    lambda ctx, s=start: [
                        ctx.db.insert("kv", {"k": i, "t": 0.0}) for i in range(s, min(n, s + 5000))
                    ]
                )
            started = time.perf_counter()
            subs = [engine.subscribe(read_one, {"id": i}) for i in ids]
            report.note(f"open {n} subscriptions: seconds", round(time.perf_counter() - started, 2))
            manager = engine._db.subscriptions
            index = manager._index
            storage = engine._db.storage
            # Invalidation work for one commit: stab the index with the commit's keys.
            target = ids[n // 2]
            engine.run(lambda ctx: ctx.db.patch(target, {"t": 1.0}))
            from engine.encoding import decode

            with storage.read() as rtxn:
                cursor = rtxn.cursor(db=storage.log)
                cursor.last()
                commit_keys = decode(cursor.value())
                cursor.close()
            hits: set[Any] = set()

            def invalidate() -> None:
                hits.clear()
                hits.update(index.stab(commit_keys))

            report.measure(
                f"invalidation for one commit, {n} open",
                invalidate,
                seconds=0.5 if quick else 2.0,
                group="invalidation work per commit",
                system="convexlite",
            )
            report.note("queries re-run for a one-document commit", len(hits))
            # In-process end to end: mutation call → delivered (mutation returns after).
            latencies: list[float] = []
            delivered = threading.Event()
            sub = subs[0]
            for i in range(50 if quick else 300):
                t0 = time.perf_counter()
                engine.run(lambda ctx, i=i: ctx.db.patch(ids[0], {"t": float(i + 2)}))
                assert sub.value == float(i + 2)
                latencies.append((time.perf_counter() - t0) * 1e3)
            report.note(
                "in-process commit → delivered, p50 ms", round(statistics.median(latencies), 3)
            )
            report.note(
                "in-process commit → delivered, p99 ms", round(_percentile(latencies, 0.99), 3)
            )
            # Cross-process: a child commits; deliveries arrive through the log poll.
            remote: list[float] = []

            def on_value(value: Any) -> None:
                if value and value > 1e9:
                    remote.append((time.time() - value) * 1e3)
                    delivered.set()

            watcher = engine.subscribe(read_one, {"id": ids[1]}, callback=on_value)
            count = 30 if quick else 200
            context = multiprocessing.get_context("spawn")
            child = context.Process(target=_writer, args=(path, ids[1], count))
            child.start()
            child.join(120)
            time.sleep(0.2)
            watcher.close()
            if remote:
                report.note(
                    "cross-process commit → delivered, p50 ms", round(statistics.median(remote), 3)
                )
                report.note(
                    "cross-process commit → delivered, p99 ms", round(_percentile(remote, 0.99), 3)
                )
            report.note("cross-process poll interval, ms", manager.poll_interval * 1e3)
            for s in subs:
                s.close()
