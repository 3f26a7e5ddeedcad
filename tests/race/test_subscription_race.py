"""Subscriptions made, dropped, closed and iterated by threads while others commit.

Model: a few keys, each one ``kv`` document whose value every writer commit raises (so
every commit changes one query's result). Subscriber threads follow ``value_of(key)``
and keep some handles, drop others (collected at once by reference counting, or left in a
reference cycle for ``gc.collect()``), close others, iterate others, and drop whole sets.
Invariants, once the writers are done: every kept subscription shows the newest value;
the manager follows exactly the executions of the kept ones (one per distinct key, the
dropped ones let go); once those are closed too the worker stops; ``check()`` passes and
``Engine.close()`` returns at once.
"""

from __future__ import annotations

import gc
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from engine import Engine, QueryCtx, query, v
from tests.waiting import wait_until


@query(args={"key": v.string()})
def value_of(ctx: QueryCtx, key: str) -> Any:
    row = ctx.db.query("kv").filter(lambda q: q.eq(q.field("key"), key)).first()
    return None if row is None else row["value"]


KEYS = ["a", "b", "c", "d"]


class _Cycle:
    """Holds a subscription in a reference cycle: only the cyclic collector frees it."""

    def __init__(self, held: Any) -> None:
        self.held = held
        self.me = self


def _raise(engine: Engine, ids: dict[str, str], key: str) -> None:
    def body(ctx: Any) -> None:
        ctx.db.patch(ids[key], {"value": ctx.db.get(ids[key])["value"] + 1})

    engine.run(body)


@pytest.mark.parametrize(
    "rounds",
    [pytest.param(100, id="quick"), pytest.param(400, id="long", marks=pytest.mark.slow)],
)
def test_threads_subscribe_drop_close_and_iterate_while_others_commit(
    db_path: Path, rounds: int
) -> None:
    engine = Engine.open(db_path, durability="none")
    try:
        engine._db.retry.retries = 100  # the writers conflict on purpose
        ids = {
            k: engine.run(lambda ctx, k=k: ctx.db.insert("kv", {"key": k, "value": 0}))
            for k in KEYS
        }
        manager = engine._db.subscriptions
        kept: list[tuple[str, Any]] = []  # (key, subscription or set)
        errors: list[BaseException] = []
        lock = threading.Lock()
        start = threading.Barrier(5)

        def write(seed: int) -> None:
            rng = random.Random(seed)
            start.wait()
            for _ in range(rounds):
                _raise(engine, ids, rng.choice(KEYS))

        def follow(seed: int) -> None:
            rng = random.Random(seed)
            start.wait()
            for i in range(rounds):
                key = rng.choice(KEYS)
                sub = engine.subscribe(value_of, {"key": key})
                assert isinstance(sub.value, int)
                what = rng.randrange(8)
                if what == 0:  # kept
                    with lock:
                        kept.append((key, sub))
                elif what == 1:  # closed
                    sub.close()
                elif what == 2:  # dropped into a cycle, collected by gc.collect()
                    _Cycle(sub)
                    if i % 4 == 0:
                        gc.collect()
                elif what == 3:  # iterated past a commit of this thread, then dropped
                    values = iter(sub)
                    first = next(values)
                    _raise(engine, ids, key)
                    assert next(values) > first
                    if rng.random() < 0.5:
                        values.close()  # type: ignore[attr-defined]
                elif what == 4:  # a set, dropped (its members and it form a cycle)
                    other = rng.choice(KEYS)
                    live = engine.subscribe_set(
                        {"x": (value_of, {"key": key}), "y": (value_of, {"key": other})}
                    )
                    assert set(live.value) == {"x", "y"}
                    if rng.random() < 0.5:
                        gc.collect()
                elif what == 5:  # a callback subscription: held by the engine, closed below
                    with lock:
                        kept.append((key, engine.subscribe(value_of, {"key": key}, callback=id)))
                # else dropped: collected at once (reference counting)
                del sub

        def guarded(target: Any, seed: int) -> None:
            try:
                target(seed)
            except BaseException as error:  # reported below
                errors.append(error)

        threads = [threading.Thread(target=guarded, args=(write, seed)) for seed in (1, 2)] + [
            threading.Thread(target=guarded, args=(follow, seed)) for seed in (3, 4, 5)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not errors, errors
        assert not any(thread.is_alive() for thread in threads)

        latest = {k: engine.query(value_of, {"key": k}) for k in KEYS}
        for key, sub in kept:  # every writer waited for the subscriptions (read-your-writes)
            assert sub.value == latest[key], (key, sub.value, latest[key])
        gc.collect()
        distinct = {key for key, _ in kept}
        wait_until(lambda: manager.active == len(distinct), 5.0, lambda: manager.active)
        _raise(engine, ids, KEYS[0])  # the kept ones still follow
        for key, sub in kept:
            assert sub.value == engine.query(value_of, {"key": key})
        for _, sub in kept:
            sub.close()
        kept.clear()
        wait_until(lambda: manager.active == 0, 5.0, lambda: manager.active)
        wait_until(lambda: manager._thread is None, 5.0)  # nothing watched: the worker ends
        engine.check()
        follower = engine.subscribe(value_of, {"key": KEYS[0]})  # open at close: it ends
        del follower
        iterated = iter(engine.subscribe(value_of, {"key": KEYS[1]}))
        next(iterated)
    finally:
        began = time.monotonic()
        engine.close()
        took = time.monotonic() - began
    assert took < 2.0, took
    assert list(iterated) == []  # ended by the close
