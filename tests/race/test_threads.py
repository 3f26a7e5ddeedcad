"""Race tests: many threads (and processes) mutating one database at once.

Each test states an invariant that a non-serializable engine would break.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from pathlib import Path
from typing import Any

import pytest

from engine import Engine, OptimisticConcurrencyControlFailure, storage
from tests.waiting import wait_until

from .workers import book, go_off_call, increment, process_increments


def run_threads(n: int, target, *args) -> list:  # type: ignore[no-untyped-def]
    results: list = []
    errors: list = []
    lock = threading.Lock()
    barrier = threading.Barrier(n)

    def worker(i: int) -> None:
        barrier.wait()
        try:
            value = target(i, *args)
            with lock:
                results.append(value)
        except BaseException as error:  # reported below
            with lock:
                errors.append(error)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    return results


@pytest.mark.parametrize("durability", ["none", "full"])
def test_concurrent_increments_are_never_lost(db_path: Path, durability: str) -> None:
    threads, per_thread = 8, 25
    with Engine.open(db_path, durability=durability) as engine:  # type: ignore[arg-type]
        engine._db.retry.retries = 100  # every increment must land; count them all
        run_threads(threads, lambda i: [engine.run(increment) for _ in range(per_thread)])
        total = engine.run(lambda ctx: ctx.db.query("counters").first())
        assert total is not None and total["n"] == threads * per_thread
        assert len(engine.run(lambda ctx: ctx.db.query("counters").collect())) == 1
        engine.check()


def test_conflicts_surface_as_occ_failure_after_the_budget(db_path: Path) -> None:
    with Engine.open(db_path, durability="none") as engine:
        engine._db.retry.retries = 0
        engine.run(increment)
        barrier = threading.Barrier(2)

        def slow_increment(ctx):  # type: ignore[no-untyped-def]
            row = ctx.db.query("counters").first()
            barrier.wait(5)  # both have read before either commits
            ctx.db.patch(row["_id"], {"n": row["n"] + 1})

        outcomes: list[str] = []

        def worker() -> None:
            try:
                engine.run(slow_increment)
                outcomes.append("ok")
            except OptimisticConcurrencyControlFailure as error:
                assert 'the "counters" table changed' in str(error)
                assert error.table == "counters"
                outcomes.append("occ")

        threads = [threading.Thread(target=worker) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes) == ["occ", "ok"]
        assert engine.run(lambda ctx: ctx.db.query("counters").first())["n"] == 2


def test_write_skew_is_prevented(db_path: Path) -> None:
    for round_ in range(10):
        with Engine.open(db_path / str(round_), durability="none") as engine:
            engine._db.retry.retries = 100
            engine.run(
                lambda ctx: [
                    ctx.db.insert("doctors", {"name": n, "on_call": True}) for n in ("alice", "bob")
                ]
            )
            run_threads(2, lambda i: engine.run(lambda ctx: go_off_call(ctx, ("alice", "bob")[i])))
            on_call = [
                d for d in engine.run(lambda ctx: ctx.db.query("doctors").collect()) if d["on_call"]
            ]
            assert len(on_call) >= 1


def test_phantoms_are_prevented(db_path: Path) -> None:
    capacity = 3
    with Engine.open(db_path, durability="none") as engine:
        engine._db.retry.retries = 100
        # The table exists first: creating it would conflict for another reason.
        engine.run(lambda ctx: ctx.db.insert("bookings", {"slot": "other", "who": "x"}))
        results = run_threads(
            8, lambda i: engine.run(lambda ctx: book(ctx, "slot-1", f"user{i}", capacity))
        )
        rows = engine.run(lambda ctx: ctx.db.query("bookings").collect())
        assert len([r for r in rows if r["slot"] == "slot-1"]) == capacity
        assert results.count(True) == capacity
        engine.check()


def test_processes_increment_without_losing_updates(db_path: Path) -> None:
    Engine.open(db_path).close()
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        done = pool.starmap(process_increments, [(str(db_path), 30), (str(db_path), 30)])
    with Engine.open(db_path) as engine:
        row = engine.run(lambda ctx: ctx.db.query("counters").first())
        assert row is not None and row["n"] == sum(done) == 60
        engine.check()


def _both_read_first(engine: Engine, read: Any, write: Any) -> list[int]:
    """Two threads run ``read(ctx)`` then ``write(ctx, seen, i)`` as mutations; on their
    first attempts both have read before either writes (a barrier), so a
    snapshot-isolation engine would let both commit on what they read."""
    barrier = threading.Barrier(2)
    attempts = [0, 0]

    def run(i: int) -> None:
        def body(ctx: Any) -> None:
            attempts[i] += 1
            seen = read(ctx)
            if attempts[i] == 1:
                barrier.wait(5)
            write(ctx, seen, i)

        engine.run(body)

    run_threads(2, run)
    return attempts


def test_write_skew_is_prevented_when_both_have_read(db_path: Path) -> None:
    # Deterministic: the timing-based test above needs the threads to overlap by chance.
    with Engine.open(db_path, durability="none") as engine:
        engine._db.retry.retries = 100
        for name in ("alice", "bob"):
            engine.run(lambda ctx, n=name: ctx.db.insert("doctors", {"name": n, "on_call": True}))

        def read(ctx: Any) -> list[Any]:
            return [d for d in ctx.db.query("doctors").collect() if d["on_call"]]

        def go_off(ctx: Any, on_call: list[Any], i: int) -> None:
            me = next(d for d in on_call if d["name"] == ("alice", "bob")[i])
            if len(on_call) >= 2:
                ctx.db.patch(me["_id"], {"on_call": False})

        attempts = _both_read_first(engine, read, go_off)
        on_call = [
            d for d in engine.run(lambda ctx: ctx.db.query("doctors").collect()) if d["on_call"]
        ]
        assert len(on_call) == 1
        assert sorted(attempts) == [1, 2]  # the second to commit re-ran, and stayed on call
        engine.check()


def test_phantom_is_prevented_when_both_have_counted(db_path: Path) -> None:
    with Engine.open(db_path, durability="none") as engine:
        engine._db.retry.retries = 100
        # The table exists first: creating it would conflict for another reason.
        engine.run(lambda ctx: ctx.db.insert("bookings", {"slot": "other", "who": -1}))

        def count(ctx: Any) -> int:
            slot = ctx.db.query("bookings").filter(lambda q: q.eq(q.field("slot"), "s"))
            return len(slot.collect())

        def book_if_free(ctx: Any, taken: int, i: int) -> None:
            if taken < 1:
                ctx.db.insert("bookings", {"slot": "s", "who": i})

        attempts = _both_read_first(engine, count, book_if_free)
        booked = engine.run(lambda ctx: ctx.db.query("bookings").collect())
        assert len([b for b in booked if b["slot"] == "s"]) == 1
        assert sorted(attempts) == [1, 2]
        engine.check()


def test_one_handle_closed_by_two_threads_at_once_releases_the_folder_once(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by hunt: close() read `_closed` and set it apart, so two threads closing one
    # handle at once both went on and dropped two references to the shared folder: the
    # other handle's storage was closed under it.
    first = Engine.open(db_path, durability="none")
    with Engine.open(db_path, durability="none") as second:
        second.run(lambda ctx: ctx.db.insert("n", {"k": 1}))
        real = first._db.in_function

        def slow_in_function() -> bool:  # widens the window between the check and the set
            result = real()
            threading.Event().wait(0.05)
            return result

        monkeypatch.setattr(first._db, "in_function", slow_in_function)
        run_threads(2, lambda i: first.close())
        monkeypatch.undo()
        assert len(second.query(lambda ctx: ctx.db.query("n").collect())) == 1
        second.run(lambda ctx: ctx.db.insert("n", {"k": 2}))
        second.check()


def test_close_says_what_it_waits_for_once_a_transaction_outlasts_its_patience(
    db_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by the stall hunt: close() waits for the LMDB transactions of other threads
    # without a bound (the map cannot be closed under a read: values handed out as
    # buffers point into it), after up to close_timeout (30 s) for the calls counted as
    # running (queries are not). A query blocked in its function kept close() waiting
    # for as long, and nothing said why.
    monkeypatch.setattr(storage, "SLOW_WAIT", 0.1)
    caplog.set_level(logging.WARNING, logger="engine.storage")
    engine = Engine.open(db_path, durability="none")
    engine.run(lambda ctx: ctx.db.insert("t", {}))
    inside, release = threading.Event(), threading.Event()

    def blocked(ctx: Any) -> bool:
        ctx.db.query("t").first()
        inside.set()
        release.wait(30)
        return ctx.db.query("t").first() is not None  # its snapshot is still readable

    def said() -> list[str]:
        return [r.getMessage() for r in caplog.records if "transaction" in r.getMessage()]

    results: list[bool] = []
    querying = threading.Thread(target=lambda: results.append(engine.query(blocked)))
    querying.start()
    closing = threading.Thread(target=engine.close)
    try:
        assert inside.wait(10)
        closing.start()
        wait_until(lambda: said(), 5, lambda: [r.getMessage() for r in caplog.records])
        assert closing.is_alive()  # it waits for the query's transaction
    finally:
        release.set()
        querying.join(30)
        if closing.ident is not None:
            closing.join(30)
        engine.close()
    assert results == [True]
    assert len(said()) == 1
    assert "waits for 1 transaction of other threads, still open after 0.1 s" in said()[0]
    assert "blocked in its function" in said()[0]


def test_close_behind_a_pending_resize_says_what_it_waits_for(
    db_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found in review: the close-waits warning (7dec1a2) only timed the wait for the
    # transactions themselves. A close that came while a resize was pending (a commit
    # that found the map full, itself waiting for a query blocked in its function)
    # waited behind that resize, for as long as the query, and said nothing.
    monkeypatch.setattr(storage, "SLOW_WAIT", 0.1)
    caplog.set_level(logging.WARNING, logger="engine.storage")
    engine = Engine.open(db_path, durability="none")
    engine.run(lambda ctx: ctx.db.insert("t", {}))
    inside, release = threading.Event(), threading.Event()

    def blocked(ctx: Any) -> bool:
        ctx.db.query("t").first()
        inside.set()
        release.wait(30)
        return True

    def said() -> list[str]:
        return [r.getMessage() for r in caplog.records if "transaction" in r.getMessage()]

    opened = engine._db.storage
    querying = threading.Thread(target=lambda: engine.query(blocked))
    growing = threading.Thread(target=opened._grow_map)  # as a commit finding the map full
    closing = threading.Thread(target=engine.close)
    try:
        querying.start()
        assert inside.wait(10)
        growing.start()
        wait_until(lambda: opened._gate.resizing, 5)  # the resize waits for the query
        closing.start()
        wait_until(lambda: said(), 5, lambda: [r.getMessage() for r in caplog.records])
        assert closing.is_alive()  # it waits behind the resize, for the query
    finally:
        release.set()
        for thread in (querying, growing, closing):
            if thread.ident is not None:
                thread.join(30)
        engine.close()
    assert len(said()) == 1
    assert "waits for 1 transaction of other threads, still open after 0.1 s" in said()[0]
