"""What one durable LMDB commit costs in flushes: the measurement behind a design choice.

Not a convexlite benchmark: raw py-lmdb only, one thread, one small document per
commit, in a temporary folder (the disk the benchmarks use).
It prints commits/s and latency for

- ``sync=True, metasync=True`` (convexlite ``full`` and the ``raw lmdb sync``
  baseline): data pages flushed, then the meta page flushed;
- ``sync=True, metasync=False`` (convexlite ``normal``): one flush;
- one flush of LMDB plus a redo record in a separate pre-written file, flushed
  after the commit or by a second thread while the commit flushes.

The question it answers: can a single thread beat raw LMDB's durable commit by
making a commit durable with one flush instead of two? Only if the redo record
rides in the same flush; in a second file it costs a second flush, serial or
parallel (the device serializes cache flushes).

Run: ``.venv/bin/python bench/probes/lmdb_flushes.py [commits]``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable

import lmdb
import msgspec

DOC = msgspec.msgpack.encode({"name": "x" * 100, "n": 1, "tags": ["a", "b"]})
SLOT = 1 << 20


def _env(folder: str, metasync: bool) -> tuple[lmdb.Environment, object]:
    env = lmdb.open(folder, map_size=1 << 30, sync=True, metasync=metasync, max_dbs=2)
    return env, env.open_db(b"docs")


def _report(name: str, latencies: list[float]) -> None:
    latencies.sort()
    n = len(latencies)
    print(
        f"{name:44s} {n / sum(latencies):7,.0f}/s  p50 {latencies[n // 2] * 1e6:5.0f} µs"
        f"  p90 {latencies[n * 9 // 10] * 1e6:5.0f} µs",
        flush=True,
    )


def plain(folder: str, commits: int, metasync: bool) -> list[float]:
    env, db = _env(folder, metasync)
    latencies = []
    for _ in range(commits):
        started = time.perf_counter()
        with env.begin(write=True, db=db) as txn:
            txn.put(os.urandom(16), DOC)
        latencies.append(time.perf_counter() - started)
    env.close()
    return latencies


def with_redo_file(folder: str, commits: int, parallel: bool) -> list[float]:
    env, db = _env(folder, metasync=False)
    fd = os.open(os.path.join(folder, "redo"), os.O_RDWR | os.O_CREAT)
    os.pwrite(fd, b"\0" * (2 * SLOT), 0)  # pre-written: a flush never changes the size
    os.fsync(fd)
    go, done = threading.Lock(), threading.Lock()
    go.acquire()
    done.acquire()
    job: list[tuple[bytes, int] | None] = [None]

    def flush(record: bytes, slot: int) -> None:
        os.pwrite(fd, record, slot * SLOT)
        os.fdatasync(fd)

    def flusher() -> None:
        while True:
            go.acquire()
            if job[0] is None:
                return
            flush(*job[0])
            done.release()

    thread = threading.Thread(target=flusher, daemon=True)
    thread.start()
    latencies = []
    for i in range(commits):
        started = time.perf_counter()
        key = os.urandom(16)
        txn = env.begin(write=True, db=db)
        txn.put(key, DOC)
        body = msgspec.msgpack.encode([i, [[1, key, DOC]]])
        record = len(body).to_bytes(4, "little") + zlib.crc32(body).to_bytes(4, "little") + body
        if parallel:
            job[0] = (record, i % 2)
            go.release()
            txn.commit()
            done.acquire()
        else:
            txn.commit()
            flush(record, i % 2)
        latencies.append(time.perf_counter() - started)
    job[0] = None
    go.release()
    thread.join()
    os.close(fd)
    env.close()
    return latencies


def main() -> None:
    commits = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    cases: list[tuple[str, Callable[[str], list[float]]]] = [
        ("metasync=True (two flushes)", lambda f: plain(f, commits, True)),
        ("metasync=False (one flush)", lambda f: plain(f, commits, False)),
        ("one flush + redo file after", lambda f: with_redo_file(f, commits, False)),
        ("one flush + redo file in parallel", lambda f: with_redo_file(f, commits, True)),
    ]
    for round_ in range(2):
        print(f"round {round_ + 1}")
        for name, case in cases:
            with tempfile.TemporaryDirectory() as f:
                _report(name, case(f))


if __name__ == "__main__":
    main()
