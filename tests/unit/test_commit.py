"""engine.commit: validation against the log, retention, group commit statistics."""

from __future__ import annotations

import threading

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
