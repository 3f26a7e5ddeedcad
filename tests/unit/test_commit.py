"""engine.commit: validation against the log, retention, group commit statistics."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from engine import Engine, commit


def test_snapshot_older_than_the_log_floor_conflicts_then_retries(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(commit, "LOG_RETENTION_NS", 0)
    monkeypatch.setattr(commit, "_PRUNE_EVERY", 1)
    doc = engine.run(lambda ctx: ctx.db.insert("t", {"n": 0}))
    runs: list[int] = []
    gate = threading.Event()

    def slow(ctx):  # type: ignore[no-untyped-def]
        runs.append(1)
        row = ctx.db.get(doc)
        if len(runs) == 1:
            gate.set()
            threading.Event().wait(0.2)  # another commit prunes the log meanwhile
        ctx.db.patch(doc, {"n": row["n"] + 1})

    def two_commits() -> None:
        gate.wait(5)
        engine.run(lambda ctx: ctx.db.insert("u", {}))
        engine.run(lambda ctx: ctx.db.insert("u", {}))  # prunes the first: floor > snapshot

    other = threading.Thread(target=two_commits)
    other.start()
    engine.run(slow)
    other.join()
    assert len(runs) == 2  # the first attempt could not be validated, so it re-ran
    assert engine.query(lambda ctx: ctx.db.get(doc))["n"] == 1
    report = engine.check()
    assert report["log_entries"] <= 2  # pruned


def test_writes_outside_the_read_set_do_not_conflict(engine: Engine) -> None:
    a = engine.run(lambda ctx: ctx.db.insert("t", {"k": "a"}))
    b = engine.run(lambda ctx: ctx.db.insert("t", {"k": "b"}))
    runs: list[int] = []
    gate = threading.Event()

    def body(ctx):  # type: ignore[no-untyped-def]
        runs.append(1)
        ctx.db.get(a)
        if len(runs) == 1:
            gate.set()
            threading.Event().wait(0.2)
        ctx.db.patch(a, {"seen": True})

    other = threading.Thread(
        target=lambda: (gate.wait(5), engine.run(lambda ctx: ctx.db.patch(b, {"x": 1})))
    )
    other.start()
    engine.run(body)
    other.join()
    assert runs == [1]


def test_group_commit_batches_concurrent_transactions(engine: Engine) -> None:
    stats = engine._db.committer.stats
    before = dict(stats)
    threads = [
        threading.Thread(
            target=lambda: [engine.run(lambda ctx: ctx.db.insert("t", {})) for _ in range(20)]
        )
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    commits = stats["commits"] - before["commits"]
    groups = stats["groups"] - before["groups"]
    assert commits == 160
    assert groups <= commits


def test_grouped_patches_deletes_and_inserts_all_land(tmp_path: Path) -> None:
    """Concurrent mutations of every kind, applied group by group, leave exact data."""
    with Engine.open(tmp_path / "db", durability="full") as engine:
        owned = {t: engine.run(lambda ctx: ctx.db.insert("t", {"n": 0})) for t in range(8)}

        def worker(t: int) -> None:
            for i in range(10):
                engine.run(lambda ctx: ctx.db.patch(owned[t], {"n": i + 1}))
                doomed = engine.run(lambda ctx: ctx.db.insert("t", {"owner": t, "i": i}))
                if i % 2:
                    engine.run(lambda ctx, d=doomed: ctx.db.delete(d))

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        rows = engine.query(lambda ctx: ctx.db.query("t").collect())
        assert sorted(r["n"] for r in rows if "n" in r) == [10] * 8
        kept = sorted((r["owner"], r["i"]) for r in rows if "owner" in r)
        assert kept == [(t, i) for t in range(8) for i in range(0, 10, 2)]
        engine.check()


def test_writers_pause_while_a_group_is_applied(engine: Engine) -> None:
    committer = engine._db.committer
    committer.idle.clear()  # as a leader does while it applies a group
    timer = threading.Timer(0.03, committer.idle.set)
    timer.start()
    started = time.perf_counter()
    engine.run(lambda ctx: ctx.db.insert("t", {}))
    assert time.perf_counter() - started >= 0.02
    timer.join()
    # Never for long: a writer waits at most 50 ms per pause even if nobody sets it.
    committer.idle.clear()
    started = time.perf_counter()
    engine.run(lambda ctx: ctx.db.insert("t", {}))
    assert time.perf_counter() - started < 1.0
    committer.idle.set()
