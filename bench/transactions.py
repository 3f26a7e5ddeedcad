"""Durable commits: single-document mutations/s by concurrency, and conflicts on a hot key.

convexlite (durability "full", group commit) with 1, 4 and 16 threads and with
2 processes, beside sqlite3 (WAL, synchronous FULL and NORMAL, 1 and 16
threads with one connection each) and raw py-lmdb with ``sync=True`` (one
thread: LMDB's single writer is the physical limit without group commit),
both as a plain store (sequential ids, two index sub-databases) and writing
exactly what a convexlite commit writes (:class:`RawLmdbLayoutStore`).
Each measured call commits a batch spread over the threads, so latency
figures are per mutation (batch time / batch size).
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .baselines import RawLmdbLayoutStore, RawLmdbStore, SqliteStore, make_documents


def _doc(i: int) -> dict[str, Any]:
    return {"name": f"user{i}", "age": i % 100, "city": f"c{i % 100}", "score": i * 0.5}


def _convexlite_batch(engine: Any, pool: ThreadPoolExecutor, threads: int, per_thread: int) -> Any:
    def one_thread(t: int) -> None:
        for i in range(per_thread):
            engine.run(lambda ctx, i=i: ctx.db.insert("people", _doc(t * 100000 + i)))

    def batch() -> None:
        list(pool.map(one_thread, range(threads)))

    return batch


def _process_worker(path: str, count: int) -> float:
    from engine import Engine

    with Engine.open(path, durability="full") as engine:
        started = time.perf_counter()
        for i in range(count):
            engine.run(lambda ctx, i=i: ctx.db.insert("people", _doc(i)))
        return time.perf_counter() - started


def run(report: Any) -> None:
    from engine import Engine

    quick = getattr(report, "quick", False)
    per_thread = 5 if quick else 25
    seconds = 0.5 if quick else 2.0
    with tempfile.TemporaryDirectory() as folder:
        with Engine.open(os.path.join(folder, "cl"), durability="full") as engine:
            _one_thread(report, engine, folder, per_thread, seconds)
            for threads in (4, 16):
                with ThreadPoolExecutor(threads) as pool:
                    batch = _convexlite_batch(engine, pool, threads, per_thread)
                    report.measure(
                        f"durable insert, {threads} thread(s)",
                        batch,
                        ops_per_call=threads * per_thread,
                        seconds=seconds,
                        group=f"durable single-document mutations, {threads} threads",
                        system="convexlite full",
                    )
            stats = engine._db.committer.stats
            report.note(
                "convexlite commits per LMDB write txn (group commit)",
                round(stats["commits"] / max(1, stats["groups"]), 2),
            )
        # Two processes on one folder.
        path = os.path.join(folder, "procs")
        Engine.open(path, durability="full").close()
        count = 40 if quick else 300
        context = multiprocessing.get_context("spawn")
        with context.Pool(2) as pool:
            started = time.perf_counter()
            pool.starmap(_process_worker, [(path, count), (path, count)])
            elapsed = time.perf_counter() - started
        report.note(
            "convexlite full, 2 processes: mutations/s (incl. process start)",
            round(2 * count / elapsed),
        )
        for synchronous in ("FULL", "NORMAL"):
            for threads in (16,):
                store = SqliteStore(
                    os.path.join(folder, f"sqlite-{synchronous}-{threads}.db"),
                    synchronous=synchronous,
                )
                local = threading.local()

                def insert_one(t: int, store: SqliteStore = store) -> None:
                    conn = getattr(local, "store", None)
                    if conn is None:
                        conn = local.store = store.clone() if threads > 1 else store
                    for i in range(per_thread):
                        conn.insert_one(_doc(t * 100000 + i))

                with ThreadPoolExecutor(threads) as pool:
                    report.measure(
                        f"durable insert, {threads} thread(s)",
                        lambda pool=pool, fn=insert_one, n=threads: list(pool.map(fn, range(n))),
                        ops_per_call=threads * per_thread,
                        seconds=seconds,
                        group=f"durable single-document mutations, {threads} threads",
                        system=f"sqlite3 WAL {synchronous}",
                    )
        _hot_key(report, os.path.join(folder, "hot"), quick)


def _one_thread(report: Any, engine: Any, folder: str, count: int, seconds: float) -> None:
    """One thread, every system in alternation: fsync latency drifts during a run."""
    docs = make_documents(count)
    sqlite = {
        mode: SqliteStore(os.path.join(folder, f"sqlite-{mode}-1.db"), synchronous=mode)
        for mode in ("FULL", "NORMAL")
    }
    raw = RawLmdbStore(os.path.join(folder, "raw"), sync=True)
    layout = RawLmdbLayoutStore(os.path.join(folder, "raw-layout"), sync=True)
    report.measure_interleaved(
        "durable insert, 1 thread(s)",
        {
            "convexlite full": lambda: [
                engine.run(lambda ctx, d=d: ctx.db.insert("people", d)) for d in docs
            ],
            "sqlite3 WAL FULL": lambda: [sqlite["FULL"].insert_one(d) for d in docs],
            "sqlite3 WAL NORMAL": lambda: [sqlite["NORMAL"].insert_one(d) for d in docs],
            "raw lmdb sync": lambda: [raw.insert_one(d) for d in docs],
            "raw lmdb sync, convexlite's layout": lambda: [layout.insert_one(d) for d in docs],
        },
        group="durable single-document mutations, 1 threads",
        ops_per_call=count,
        seconds=seconds,
    )


def _hot_key(report: Any, path: str, quick: bool) -> None:
    from engine import Engine, OptimisticConcurrencyControlFailure

    with Engine.open(path, durability="none") as engine:
        counter = engine.run(lambda ctx: ctx.db.insert("counters", {"n": 0}))

        def increment(ctx: Any) -> None:
            row = ctx.db.get(counter)
            ctx.db.patch(counter, {"n": row["n"] + 1})

        failures = 0
        lock = threading.Lock()

        def worker(_: int) -> None:
            nonlocal failures
            for _ in range(20 if quick else 100):
                try:
                    engine.run(increment)
                except OptimisticConcurrencyControlFailure:
                    with lock:
                        failures += 1

        before = dict(engine._db.committer.stats)
        started = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(worker, range(8)))
        elapsed = time.perf_counter() - started
        stats = engine._db.committer.stats
        commits = stats["commits"] - before["commits"]
        conflicts = stats["conflicts"] - before["conflicts"]
        report.note("hot key, 8 threads: committed increments/s", round(commits / elapsed))
        report.note("hot key, 8 threads: conflicts per commit", round(conflicts / commits, 3))
        report.note("hot key, 8 threads: OptimisticConcurrencyControlFailure raised", failures)
