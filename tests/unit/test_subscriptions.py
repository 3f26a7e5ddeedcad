"""engine.subscriptions: re-run only what a commit touches, deliver consistently."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from engine import (
    Engine,
    EngineError,
    QueryCtx,
    StorageError,
    define_schema,
    define_table,
    query,
    storage,
    v,
)
from engine.intervals import IntervalIndex

calls: dict[str, int] = {}


@query(args={"key": v.string()})
def by_key(ctx: QueryCtx, key: str) -> Any:
    calls[key] = calls.get(key, 0) + 1
    row = ctx.db.query("kv").filter(lambda q: q.eq(q.field("key"), key)).first()
    return None if row is None else row["value"]


@query(args={"id": v.string()})
def get_one(ctx: QueryCtx, id: str) -> Any:
    calls[id] = calls.get(id, 0) + 1
    doc = ctx.db.get(id)
    return None if doc is None else doc["value"]


@query(args={"id": v.string()})
def strict(ctx: QueryCtx, id: str) -> Any:
    doc = ctx.db.get(id)
    if doc is None or doc["value"] < 0:
        raise ValueError("negative value")
    return doc["value"]


@pytest.fixture
def engine(db_path: Path):  # type: ignore[no-untyped-def]
    calls.clear()
    with Engine.open(db_path, durability="none") as handle:
        yield handle


def put(engine: Engine, key: str, value: Any) -> str:
    return engine.run(lambda ctx: ctx.db.insert("kv", {"key": key, "value": value}))


def test_value_then_updates_with_read_your_writes(engine: Engine) -> None:
    doc = put(engine, "a", 1)
    with engine.subscribe(get_one, {"id": doc}) as sub:
        assert sub.value == 1
        engine.run(lambda ctx: ctx.db.patch(doc, {"value": 2}))
        assert sub.value == 2  # visible before the mutation call returned
    assert sub.closed


def test_only_touched_subscriptions_rerun(engine: Engine) -> None:
    ids = [put(engine, f"k{i}", i) for i in range(20)]
    subs = [engine.subscribe(get_one, {"id": i}) for i in ids]
    before = dict(calls)
    engine.run(lambda ctx: ctx.db.patch(ids[3], {"value": 100}))
    assert subs[3].value == 100
    rerun = {k for k in calls if calls[k] != before.get(k)}
    assert rerun == {ids[3]}
    for s in subs:
        s.close()


def test_identical_subscriptions_share_one_execution(engine: Engine) -> None:
    doc = put(engine, "a", 1)
    one = engine.subscribe(get_one, {"id": doc})
    two = engine.subscribe(get_one, {"id": doc})
    assert calls[doc] == 1
    engine.run(lambda ctx: ctx.db.patch(doc, {"value": 5}))
    assert one.value == two.value == 5
    assert calls[doc] == 2
    one.close()
    two.close()


def test_unchanged_result_is_not_delivered(engine: Engine) -> None:
    doc = put(engine, "a", 1)
    delivered: list[Any] = []
    with engine.subscribe(get_one, {"id": doc}, callback=delivered.append):
        engine.run(lambda ctx: ctx.db.patch(doc, {"other": 1}))  # value unchanged
        engine.run(lambda ctx: ctx.db.patch(doc, {"value": 3}))
        # Callbacks run on the worker after the value is published: wait for them (a
        # closed subscription's callbacks never run).
        _eventually(lambda: len(delivered) >= 2)
        time.sleep(0.05)
    assert delivered == [1, 3]  # the first value, then only real changes


def test_iteration_yields_current_then_changes(engine: Engine) -> None:
    doc = put(engine, "a", 0)
    seen: list[Any] = []
    sub = engine.subscribe(get_one, {"id": doc})

    def consume() -> None:
        for value in sub:
            seen.append(value)
            if value == 3:
                break

    thread = threading.Thread(target=consume)
    thread.start()
    # Each value is waited for before the next commit (a consumer starting or reading
    # late skipped values, or saw 3 first): then it yields each one, once, in order.
    assert _until(lambda: seen == [0])
    for i in (1, 2, 3):
        engine.run(lambda ctx, i=i: ctx.db.patch(doc, {"value": i}))
        assert _until(lambda i=i: len(seen) > i)
    thread.join(5)
    sub.close()
    assert seen == [0, 1, 2, 3]


def test_two_threads_iterating_one_subscription_both_follow_it(engine: Engine) -> None:
    # Found by a scratch check: the iterations of one subscription shared one "woken"
    # flag, so the first to wake cleared it for the other, which slept on and was left
    # several values behind (after 20 commits: one had the last value, the other 4).
    doc = put(engine, "a", 0)
    seen: dict[int, list[Any]] = {0: [], 1: []}
    with engine.subscribe(get_one, {"id": doc}) as sub:

        def follow(which: int) -> None:
            for value in sub:
                seen[which].append(value)
                if value == 5:
                    return

        threads = [threading.Thread(target=follow, args=(which,)) for which in (0, 1)]
        for thread in threads:
            thread.start()
        assert _until(lambda: seen[0] == [0] and seen[1] == [0])
        for i in range(1, 6):
            engine.run(lambda ctx, i=i: ctx.db.patch(doc, {"value": i}))
            assert _until(lambda i=i: seen[0][-1] == i and seen[1][-1] == i), seen
        for thread in threads:
            thread.join(5)
    assert seen == {0: [0, 1, 2, 3, 4, 5], 1: [0, 1, 2, 3, 4, 5]}


def test_errors_are_delivered_and_recovered_from(engine: Engine) -> None:
    doc = put(engine, "a", 1)
    errors: list[BaseException] = []
    with engine.subscribe(strict, {"id": doc}, on_error=errors.append) as sub:
        engine.run(lambda ctx: ctx.db.patch(doc, {"value": -1}))
        with pytest.raises(ValueError, match="negative"):
            sub.value  # noqa: B018
        assert _until(lambda: len(errors) == 1)  # callbacks may lag the mutation's return
        engine.run(lambda ctx: ctx.db.patch(doc, {"value": 7}))
        assert sub.value == 7


def _frames(error: BaseException) -> list[str]:
    names = []
    tb = error.__traceback__
    while tb is not None:
        names.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    return names


def test_reading_a_failed_value_does_not_grow_its_traceback(engine: Engine) -> None:
    """``.value`` re-raised the one stored error object, and each raise adds the reader's
    frames to that object's traceback: a failing subscription read in a loop (or
    iterated again and again) kept a growing chain of every reader's frames, and their
    locals, alive. Each read now raises it with the query's own traceback."""
    doc = put(engine, "a", -1)
    with engine.subscribe(strict, {"id": doc}) as sub:
        lengths = []
        for _ in range(5):
            with pytest.raises(ValueError, match="negative") as caught:
                sub.value  # noqa: B018
            lengths.append(len(_frames(caught.value)))
            assert "strict" in _frames(caught.value)  # where the query raised is kept
        with pytest.raises(ValueError):  # an iteration raises it once (see the next test)
            next(iter(sub))
        with pytest.raises(ValueError) as caught:
            sub.value  # noqa: B018
        assert len(set(lengths)) == 1 and len(_frames(caught.value)) == lengths[0]


def test_iterating_again_after_an_error_waits_for_the_next_outcome(engine: Engine) -> None:
    """The docstring says to iterate again after an iteration raised a failed re-run's
    error. A new iteration raised that same error again at once, so the retry loop
    (``while True: try: for v in sub``) spun at full speed until the data changed. A new
    iteration now waits for the next outcome; a later, new error is raised again."""
    doc = put(engine, "a", -1)
    with engine.subscribe(strict, {"id": doc}) as sub:
        with pytest.raises(ValueError, match="negative"):
            next(iter(sub))
        with pytest.raises(ValueError, match="negative"):  # .value raises it every time
            sub.value  # noqa: B018
        raised: list[BaseException] = []
        got: list[Any] = []

        def follow() -> None:
            while len(raised) < 1000:
                try:
                    for value in sub:
                        got.append(value)
                        return
                except ValueError as error:
                    raised.append(error)

        thread = threading.Thread(target=follow, daemon=True)
        thread.start()
        thread.join(0.3)  # time enough to spin a thousand times, were it to
        assert thread.is_alive() and raised == []
        engine.run(lambda ctx: ctx.db.patch(doc, {"value": 7}))
        thread.join(5)
        assert not thread.is_alive() and got == [7] and raised == []
        engine.run(lambda ctx: ctx.db.patch(doc, {"value": -2}))
        assert _until(lambda: _fails(sub))
        with pytest.raises(ValueError, match="negative"):  # a new error: raised again
            next(iter(sub))


def test_async_iterating_again_after_an_error_waits_for_the_next_outcome(
    engine: Engine,
) -> None:
    """The same as the test above, with ``async for``."""
    doc = put(engine, "a", -1)

    async def main() -> list[Any]:
        with engine.subscribe(strict, {"id": doc}) as sub:
            with pytest.raises(ValueError, match="negative"):
                async for _ in sub:
                    pass

            async def first() -> Any:
                async for value in sub:
                    return value
                return None

            task = asyncio.ensure_future(first())
            done, _ = await asyncio.wait([task], timeout=0.3)
            assert not done  # waiting for the next outcome, not raising again
            await engine.arun(lambda ctx: ctx.db.patch(doc, {"value": 7}))
            return [await asyncio.wait_for(task, 5)]

    assert asyncio.run(main()) == [7]


def _fails(sub: Any) -> bool:
    try:
        sub.value  # noqa: B018
    except ValueError:
        return True
    return False


def test_range_subscription_sees_inserts_in_range(engine: Engine) -> None:
    with engine.subscribe(by_key, {"key": "x"}) as sub:
        assert sub.value is None
        put(engine, "x", 42)
        assert sub.value == 42


def test_async_iteration(engine: Engine) -> None:
    doc = put(engine, "a", 0)

    async def main() -> list[Any]:
        sub = engine.subscribe(get_one, {"id": doc})
        seen: list[Any] = []

        async def writer() -> None:
            for i in (1, 2):
                await asyncio.sleep(0.05)
                await engine.arun(lambda ctx, i=i: ctx.db.patch(doc, {"value": i}))

        task = asyncio.create_task(writer())
        async for value in sub:
            seen.append(value)
            if value == 2:
                break
        await task
        sub.close()
        return seen

    seen = asyncio.run(main())
    assert seen[0] == 0 and seen[-1] == 2


def test_worker_thread_stops_after_last_close(engine: Engine) -> None:
    doc = put(engine, "a", 0)
    before = threading.active_count()
    sub = engine.subscribe(get_one, {"id": doc})
    sub.close()
    deadline = time.time() + 2
    while threading.active_count() >= before + 1 and time.time() < deadline:
        time.sleep(0.01)
    assert not any(t.name == "convexlite-subscriptions" for t in threading.enumerate())


def test_interval_index_stabs_only_hits() -> None:
    index = IntervalIndex()
    for i in range(1000):
        key = i.to_bytes(4, "big")
        index.add(i, [(key, key + b"\x00")])
    index.add("wide", [(b"\x00", b"\x00\x00\x01\x00")])
    assert index.stab([(500).to_bytes(4, "big")]) == {500}
    assert index.stab([(5).to_bytes(4, "big")]) == {5, "wide"}
    index.remove(5)
    assert index.stab([(5).to_bytes(4, "big")]) == {"wide"}
    index.add(5, [(b"\x09", b"\x0a")])
    assert index.stab([b"\x09\x00"]) == {5}


@query(args={"paginationOpts": v.any()})
def page_of_kv(ctx: QueryCtx, paginationOpts: Any) -> Any:
    calls["page"] = calls.get("page", 0) + 1
    result = ctx.db.query("kv").paginate(paginationOpts)
    return [d["key"] for d in result["page"]]


def test_paginated_subscription_keeps_its_boundary(engine: Engine) -> None:
    for i in range(6):
        put(engine, f"k{i}", i)
    with engine.subscribe(page_of_kv, {"paginationOpts": {"numItems": 3, "cursor": None}}) as sub:
        assert sub.value == ["k0", "k1", "k2"]
        runs = calls["page"]
        put(engine, "k6", 6)  # past the page boundary: no re-run
        assert calls["page"] == runs
        first = engine.query(lambda ctx: ctx.db.query("kv").first())
        engine.run(lambda ctx: ctx.db.delete(first["_id"]))
        assert sub.value == ["k1", "k2"]  # the page shrinks; its end stays where it was


@query(args={})
def total(ctx: QueryCtx) -> Any:
    return sum(d["value"] for d in ctx.db.query("kv").collect())


@query(args={})
def count(ctx: QueryCtx) -> Any:
    return len(ctx.db.query("kv").collect())


def test_subscriptions_update_at_one_timestamp(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two queries over the same rows always agree: both re-run on one snapshot."""
    by_ts: dict[str, dict[int, Any]] = {"sum": {}, "count": {}}
    holder: dict[str, Any] = {}
    manager = engine._db.subscriptions
    # Callbacks run on a thread of their own, maybe after the worker published newer
    # batches: manager.ts read there can be a later batch's (a late callback thread gave
    # one batch's sum and the next one's count one key). So it is read on the worker,
    # which queues a batch's callbacks before it steps again, and handed to the callback.
    batch_ts = [0]
    queue_callback = manager._callbacks_later

    def stamped(task: Any) -> None:
        ts = manager.ts  # on the worker: the batch's timestamp

        def run() -> None:
            batch_ts[0] = ts
            task()

        queue_callback(run)

    monkeypatch.setattr(manager, "_callbacks_later", stamped)

    def record(kind: str) -> Any:
        def callback(value: Any) -> None:
            by_ts[kind][batch_ts[0]] = value

        return callback

    holder["sum"] = engine.subscribe(total, {}, callback=record("sum"))
    holder["count"] = engine.subscribe(count, {}, callback=record("count"))
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            put(engine, "x", 1)

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join()
    common = by_ts["sum"].keys() & by_ts["count"].keys()
    assert len(common) > 3
    for ts in common:  # every value is 1: at one snapshot the sum equals the count
        assert by_ts["sum"][ts] == by_ts["count"][ts]
    assert holder["sum"].value == holder["count"].value
    holder["sum"].close()
    holder["count"].close()


def _remote_patch(path: str, doc_id: str, value: int) -> None:
    with Engine.open(path, durability="none") as other:
        other.run(lambda ctx: ctx.db.patch(doc_id, {"value": value}))


def test_commits_of_other_processes_are_delivered(engine: Engine) -> None:
    import multiprocessing

    doc = put(engine, "a", 1)
    seen = threading.Event()
    with engine.subscribe(
        get_one, {"id": doc}, callback=lambda value: value == 99 and seen.set()
    ) as sub:
        process = multiprocessing.get_context("spawn").Process(
            target=_remote_patch, args=(engine.path, doc, 99)
        )
        process.start()
        process.join(60)
        assert seen.wait(5), "the other process's commit never arrived"
        assert sub.value == 99


def test_a_failing_callback_does_not_stop_deliveries(engine: Engine) -> None:
    doc = put(engine, "a", 1)

    def bad(value: Any) -> None:
        raise RuntimeError("callback bug")

    with engine.subscribe(get_one, {"id": doc}, callback=bad) as sub:
        engine.run(lambda ctx: ctx.db.patch(doc, {"value": 2}))
        assert sub.value == 2
        engine.run(lambda ctx: ctx.db.patch(doc, {"value": 3}))
        assert sub.value == 3


def test_no_leaked_readers_after_close(engine: Engine) -> None:
    doc = put(engine, "a", 1)
    for _ in range(50):
        with engine.subscribe(get_one, {"id": doc}) as sub:
            assert sub.value == 1
    readers = engine._db.storage.env.readers()
    assert readers.count("\n") <= 3  # header line and at most our own idle slot


def test_subscription_set_is_one_snapshot(engine: Engine) -> None:
    put(engine, "x", 1)
    with engine.subscribe_set({"sum": (total, {}), "count": (count, {})}) as live:
        assert live.value == {"sum": 1, "count": 1}
        stop = threading.Event()

        def writer() -> None:
            while not stop.is_set():
                put(engine, "x", 1)

        thread = threading.Thread(target=writer)
        thread.start()
        samples = []
        deadline = time.time() + 0.5
        while time.time() < deadline:
            samples.append(live.value)
        stop.set()
        thread.join()
        assert all(s["sum"] == s["count"] for s in samples)
        seen = []
        iterator = iter(live)
        seen.append(next(iterator))
        put(engine, "x", 1)
        seen.append(next(iterator))
        assert seen[1]["count"] == seen[0]["count"] + 1


def test_a_set_supports_async_for(engine: Engine) -> None:
    """A SubscriptionSet had only ``for``: ``async for`` raised TypeError, though a
    Subscription has both. It now yields the members' dict first and after each change,
    and ends when the set is closed."""
    put(engine, "x", 1)

    async def main() -> list[Any]:
        seen: list[Any] = []
        live = engine.subscribe_set({"sum": (total, {}), "count": (count, {})})
        async for state in live:
            seen.append(state)
            if len(seen) == 1:
                await engine.arun(lambda ctx: ctx.db.insert("kv", {"key": "x", "value": 2}))
            else:
                live.close()
        return seen

    assert asyncio.run(main()) == [{"sum": 1, "count": 1}, {"sum": 3, "count": 2}]


first_run_gate = threading.Event()


@query(args={})
def gated(ctx: QueryCtx) -> Any:
    """Waits (5 s at most) for the test's event loop to set ``first_run_gate``: a first run that
    blocked the loop would time out."""
    return first_run_gate.wait(5)


def test_asubscribe_runs_the_first_value_off_the_event_loop(engine: Engine) -> None:
    """There was no async twin of subscribe(): called from a coroutine, its first run
    blocked the event loop. asubscribe (and asubscribe_set) wait on a worker thread."""
    first_run_gate.clear()

    async def main() -> tuple[Any, Any]:
        async def open_gate() -> None:
            await asyncio.sleep(0.05)
            first_run_gate.set()

        opener = asyncio.ensure_future(open_gate())
        sub = await engine.asubscribe(gated)
        live = await engine.asubscribe_set({"g": (gated, {})})
        await opener
        with sub, live:
            return sub.value, live.value

    assert asyncio.run(main()) == (True, {"g": True})


def test_a_cancelled_asubscribe_closes_the_subscription_it_made(engine: Engine) -> None:
    first_run_gate.clear()

    async def main() -> None:
        task = asyncio.ensure_future(engine.asubscribe(gated))
        await asyncio.sleep(0.05)  # the first run has begun, on a worker thread
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        first_run_gate.set()

    asyncio.run(main())
    manager = engine._db.subscriptions
    assert _until(lambda: not manager._watched)  # made after the cancel, then closed


def test_a_set_yields_once_per_commit_that_changes_several_members(engine: Engine) -> None:
    """A commit that changed two members woke the set's iterations once per member, so
    an iteration quick enough to read between the two wakes yielded the same dict twice
    (here a pause after each wake of the set makes it read between them every time;
    iterations also skip a wake that brings nothing new, a second guard)."""
    doc = put(engine, "a", 1)
    seen: list[Any] = []
    with engine.subscribe_set({"a": (get_one, {"id": doc}), "b": (strict, {"id": doc})}) as live:
        original = live._wake

        def wake_then_pause() -> None:  # on the worker: the iteration reads meanwhile
            original()
            time.sleep(0.15)

        live._wake = wake_then_pause  # type: ignore[method-assign]

        follower = _follow(live, seen)
        assert _until(lambda: len(seen) == 1)
        engine.run(lambda ctx: ctx.db.patch(doc, {"value": 2}))
        assert _until(lambda: len(seen) >= 2)
        time.sleep(0.4)  # a second wake would have been read by now
    follower.join(5)
    assert seen == [{"a": 1, "b": 1}, {"a": 2, "b": 2}]


def test_iteration_never_yields_one_published_value_twice(engine: Engine) -> None:
    """An iteration woken for one commit read the value a moment later; a second commit
    published in that moment was read then, and its own wake made the iteration yield
    it again. Iterations now yield only what was published since their last yield
    (here a pause at that moment makes the race happen every time)."""
    doc = put(engine, "a", 0)
    seen: list[Any] = []
    with engine.subscribe(get_one, {"id": doc}) as sub:
        original = sub._raise_if_stopped
        paused = threading.Event()  # the iteration was woken after its first yield
        published = threading.Event()  # the second commit is published

        def pause() -> None:  # runs between the wake-up and reading the value
            if seen == [0] and not paused.is_set():  # the first wake-up after the yield
                paused.set()
                published.wait(10)  # events, not sleeps: any thread may run late
            original()

        sub._raise_if_stopped = pause  # type: ignore[method-assign]

        follower = _follow(sub, seen)
        assert _until(lambda: seen == [0])
        engine.run(lambda ctx: ctx.db.patch(doc, {"value": 1}))
        assert paused.wait(10)  # the iteration is woken and pauses
        engine.run(lambda ctx: ctx.db.patch(doc, {"value": 2}))
        published.set()
        assert _until(lambda: seen[-1:] == [2])
        time.sleep(0.4)  # a second wake would have been read by now
    follower.join(5)
    assert seen == [0, 2]


def _by_x_schema(field: str) -> Any:
    return define_schema(
        {"t": define_table({"a": v.int64(), "b": v.int64()}).index("by_x", [field])}
    )


def _remote_open(path: str, field: str, insert: bool) -> None:
    """Another process opens with by_x on ``field`` (a new deployment of the schema)."""
    schema = _by_x_schema(field)
    schema.tables["messages"] = define_table({"body": v.string()})
    with Engine.open(path, schema=schema, durability="none") as other:
        if insert:
            other.run(lambda ctx: ctx.db.insert("messages", {"body": "hello"}))


@query(args={})
def t_by_x(ctx: QueryCtx) -> Any:
    return [[d["a"], d["b"]] for d in ctx.db.query("t").with_index("by_x").collect()]


@query(args={})
def message_bodies(ctx: QueryCtx) -> Any:
    return [d["body"] for d in ctx.db.query("messages").collect()]


def _follow(values: Any, seen: list[Any]) -> threading.Thread:
    """A started thread appending every value ``values`` yields to ``seen``."""
    follower = threading.Thread(target=lambda: seen.extend(values))
    follower.start()
    return follower


def _until(predicate: Any, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_schema_changes_of_other_processes_rerun_subscriptions(db_path: Path) -> None:
    # Found by review: the schema change wrote no log entry, so a redefined index (its
    # entries under a new index number) and a table created by the change were never
    # seen by subscriptions; they stayed stale even after later commits.
    import multiprocessing

    with Engine.open(db_path, schema=_by_x_schema("a"), durability="none") as engine:
        engine.run(lambda ctx: ctx.db.insert("t", {"a": 1, "b": 2}))
        engine.run(lambda ctx: ctx.db.insert("t", {"a": 2, "b": 1}))
        with (
            engine.subscribe(t_by_x, {}) as ordered,
            engine.subscribe(message_bodies, {}) as bodies,
        ):
            assert ordered.value == [[1, 2], [2, 1]] and bodies.value == []
            process = multiprocessing.get_context("spawn").Process(
                target=_remote_open, args=(engine.path, "b", True)
            )
            process.start()
            process.join(60)
            assert process.exitcode == 0
            assert _until(lambda: ordered.value == [[2, 1], [1, 2]]), ordered.value
            assert _until(lambda: bodies.value == ["hello"]), bodies.value
            engine.run(lambda ctx: ctx.db.insert("t", {"a": 0, "b": 0}))
            assert ordered.value == [[0, 0], [2, 1], [1, 2]]  # the new index is followed
            engine.run(lambda ctx: ctx.db.insert("messages", {"body": "again"}))
            assert bodies.value == ["hello", "again"]


def _within(seconds: float, fn: Any) -> Any:
    """``fn()`` on a thread; fails the test if it has not returned after ``seconds``."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as error:  # returned to the test
            out["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still blocked after {seconds} s"
    if "error" in out:
        raise out["error"]
    return out["value"]


def test_a_closed_subscription_iterates_nothing(engine: Engine) -> None:
    # Found by review: iterating after close() waited forever for a wake-up.
    doc = put(engine, "a", 1)
    sub = engine.subscribe(get_one, {"id": doc})
    group = engine.subscribe_set({"one": (get_one, {"id": doc})})
    sub.close()
    group.close()
    assert _within(5, lambda: list(sub)) == []
    assert _within(5, lambda: list(group)) == []
    assert sub.value == 1  # the last value stays readable

    async def drain() -> list[Any]:
        return [value async for value in sub]

    assert _within(5, lambda: asyncio.run(drain())) == []


def test_a_closed_subscription_keeps_its_last_value(engine: Engine) -> None:
    # Found by a scratch check of the docs' "sub.value keeps the last result": a closed
    # subscription read the shared execution, so while an identical subscription stayed
    # open its value (and ts) went on changing, and a closed set's values too.
    doc = put(engine, "a", 1)
    other = put(engine, "b", 10)
    with engine.subscribe(get_one, {"id": doc}) as still_open:
        closed = engine.subscribe(get_one, {"id": doc})
        members = engine.subscribe_set({"a": (get_one, {"id": doc}), "b": (get_one, {"id": other})})
        closed.close()
        members.close()
        ts = closed.ts
        engine.run(lambda ctx: ctx.db.patch(doc, {"value": 2}))
        assert still_open.value == 2
        assert closed.value == 1 and closed.ts == ts
        assert members.value == {"a": 1, "b": 10}
        assert list(closed) == [] and list(members) == []


def test_a_closed_set_keeps_the_timestamp_of_its_values(engine: Engine) -> None:
    # Found by review: a closed set kept its members' values but its ts was the worker's,
    # so an identical subscription still open moved it past the values it shows.
    doc = put(engine, "a", 1)
    with engine.subscribe(get_one, {"id": doc}) as still_open:
        members = engine.subscribe_set({"a": (get_one, {"id": doc})})
        members.close()
        ts = members.ts
        engine.run(lambda ctx: ctx.db.patch(doc, {"value": 2}))
        assert still_open.value == 2 and still_open.ts > ts
        assert members.value == {"a": 1} and members.ts == ts


def test_closing_the_engine_ends_its_subscriptions(db_path: Path) -> None:
    # Found by review: the worker kept reading the closed environment and died, and
    # a consumer iterating the subscription hung.
    engine = Engine.open(db_path, durability="none")
    doc = put(engine, "a", 1)
    sub = engine.subscribe(get_one, {"id": doc})
    seen: list[Any] = []
    consumer = threading.Thread(target=lambda: seen.extend(sub), daemon=True)
    consumer.start()
    assert _until(lambda: seen == [1])
    engine.close()
    consumer.join(5)
    assert not consumer.is_alive() and seen == [1]
    assert sub.closed and sub.value == 1
    assert not [t for t in threading.enumerate() if t.name == "convexlite-subscriptions"]


def test_callbacks_may_call_the_engine(engine: Engine) -> None:
    # Found by review: a mutation from a callback waited 30 s for the subscriptions to
    # catch up, on the very thread that updates them; subscribe() from one hung (then
    # was refused; callbacks now run off the worker, so it works).
    doc = put(engine, "a", 1)
    outcomes: list[Any] = []

    def react(value: Any) -> None:
        if value == 2:
            started = time.monotonic()
            engine.run(lambda ctx: ctx.db.insert("audit", {"saw": value}))
            outcomes.append(time.monotonic() - started)
            # Callbacks run on a thread of their own now: the worker is free to run the
            # new subscription's first execution.
            with engine.subscribe(get_one, {"id": doc}) as inner:
                outcomes.append(inner.value)

    with engine.subscribe(get_one, {"id": doc}, callback=react):
        engine.run(lambda ctx: ctx.db.patch(doc, {"value": 2}))
        assert _until(lambda: len(outcomes) == 2)
    assert outcomes[0] < 5
    assert outcomes[1] == 2
    assert engine.run(lambda ctx: len(ctx.db.query("audit").collect())) == 1


def test_a_failed_worker_ends_iterations_with_its_error(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = put(engine, "a", 1)
    sub = engine.subscribe(get_one, {"id": doc})
    manager = engine._db.subscriptions

    def broken(new: Any) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(manager, "_step", broken)
    iteration = iter(sub)
    assert next(iteration) == 1
    engine.run(lambda ctx: ctx.db.patch(doc, {"value": 2}))  # wakes the worker, which dies
    with pytest.raises(EngineError, match="subscription worker failed") as raised:
        _within(5, lambda: next(iteration))
    assert isinstance(raised.value.__cause__, RuntimeError)
    assert sub.closed
    # Found by review: after the failure, .value gave the stale value and new iterations
    # (sync and async) ended silently, as if the subscription had been closed.
    with pytest.raises(EngineError, match="subscription worker failed"):
        sub.value  # noqa: B018
    with pytest.raises(EngineError, match="subscription worker failed"):
        list(sub)

    async def follow() -> list[Any]:
        return [value async for value in sub]

    with pytest.raises(EngineError, match="subscription worker failed"):
        asyncio.run(follow())


def test_a_worker_failure_spares_subscriptions_a_new_worker_serves(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by review: the dying worker let go of the lock between leaving and ending the
    subscriptions; a subscribe() there started a new worker, and the old one's failure
    then ended the new subscription too (and marked the new worker failed)."""
    doc = put(engine, "a", 1)
    other = put(engine, "b", 5)
    sub = engine.subscribe(get_one, {"id": doc})
    manager = engine._db.subscriptions
    real_step, real_fail = manager._step, manager._fail
    fresh: list[Any] = []

    def broken(new: Any) -> None:
        monkeypatch.setattr(manager, "_step", real_step)  # only the first round fails
        raise RuntimeError("disk on fire")

    def fail_after_a_subscribe(subscriptions: Any, error: BaseException, what: str) -> None:
        # Where the old code let go of the lock: another thread subscribes now.
        thread = threading.Thread(
            target=lambda: fresh.append(engine.subscribe(get_one, {"id": other}))
        )
        thread.start()
        thread.join(5)
        real_fail(subscriptions, error, what)

    monkeypatch.setattr(manager, "_step", broken)
    monkeypatch.setattr(manager, "_fail", fail_after_a_subscribe)
    engine.run(lambda ctx: ctx.db.patch(doc, {"value": 2}))  # wakes the worker, which dies
    assert _until(lambda: sub.closed)
    assert len(fresh) == 1
    assert fresh[0].value == 5 and not fresh[0].closed
    engine.run(lambda ctx: ctx.db.patch(other, {"value": 6}))
    assert fresh[0].value == 6  # served by the new worker
    fresh[0].close()


def test_a_callback_raising_system_exit_is_named_as_the_cause(engine: Engine) -> None:
    """Found by review: a callback raising what is not an Exception ends the
    subscriptions, and their errors said "The subscription worker failed", which had not:
    the worker goes on serving new subscriptions."""
    doc = put(engine, "a", 1)

    def leave(value: Any) -> None:
        if value == 2:
            raise SystemExit("callback quits")

    sub = engine.subscribe(get_one, {"id": doc}, callback=leave)
    engine.run(lambda ctx: ctx.db.patch(doc, {"value": 2}))
    assert _until(lambda: sub.closed)
    with pytest.raises(EngineError, match=r"A subscription callback raised \(SystemExit"):
        sub.value  # noqa: B018
    with engine.subscribe(get_one, {"id": doc}) as fresh:  # the worker serves on
        assert fresh.value == 2


@query(args={"id": v.string()})
def exits(ctx: QueryCtx, id: str) -> Any:
    if ctx.db.get(id)["value"] == "exit":
        raise SystemExit("bad query")
    return "fine"


def test_a_query_raising_system_exit_fails_alone(engine: Engine) -> None:
    # Found by review: a SystemExit from one subscribed query killed the worker, which
    # closed every subscription of the process.
    good_doc, bad_doc = put(engine, "good", 1), put(engine, "bad", "ok")
    with (
        engine.subscribe(get_one, {"id": good_doc}) as good,
        engine.subscribe(exits, {"id": bad_doc}) as bad,
    ):
        assert bad.value == "fine"
        engine.run(lambda ctx: ctx.db.patch(bad_doc, {"value": "exit"}))
        with pytest.raises(SystemExit, match="bad query"):
            bad.value  # noqa: B018
        engine.run(lambda ctx: ctx.db.patch(good_doc, {"value": 2}))
        assert good.value == 2 and not good.closed
        engine.run(lambda ctx: ctx.db.patch(bad_doc, {"value": "ok again"}))
        assert bad.value == "fine"


@query(args={"paginationOpts": v.any()})
def first_page(ctx: QueryCtx, paginationOpts: Any) -> Any:
    result = ctx.db.query("kv").paginate(paginationOpts)
    return [row["value"] for row in result["page"]]


def _eventually(check: Any, timeout: float = 5.0) -> None:
    assert _until(check, timeout), "timed out"


def test_a_new_paginated_subscription_gets_a_first_page_of_its_own(engine: Engine) -> None:
    ids = [put(engine, "k", n) for n in range(10)]
    opts = {"paginationOpts": {"numItems": 3, "cursor": None}}
    with engine.subscribe(first_page, opts) as old:
        assert old.value == [0, 1, 2]
        engine.run(lambda ctx: [ctx.db.delete(i) for i in ids[:3]])
        assert old.value == []  # its page keeps the boundary its first run found (journal)
        # A new subscription is not pinned by the old one's journal: a fresh first page.
        with engine.subscribe(first_page, opts) as new:
            assert new.value == engine.query(first_page, opts) == [3, 4, 5]
            engine.run(lambda ctx: ctx.db.delete(ids[3]))
            assert new.value == [4, 5]  # and from now on it keeps its own boundary
            assert old.value == []


def test_joining_a_running_query_delivers_its_value_to_the_callback(engine: Engine) -> None:
    doc = put(engine, "a", 0)
    got_a: list[Any] = []
    got_b: list[Any] = []
    with engine.subscribe(get_one, {"id": doc}, callback=got_a.append):
        _eventually(lambda: got_a == [0])
        with engine.subscribe(get_one, {"id": doc}, callback=got_b.append) as b:
            assert b.value == 0
            _eventually(lambda: got_b == [0])  # the first value, once
            engine.run(lambda ctx: ctx.db.patch(doc, {"value": 1}))
            _eventually(lambda: got_b == [0, 1])
    assert got_a == [0, 1]
    assert calls[doc] == 2  # one shared execution: run once, then once per change


def test_joining_a_failing_query_delivers_its_error(engine: Engine) -> None:
    doc = put(engine, "a", -1)
    errors: list[BaseException] = []
    with (
        engine.subscribe(strict, {"id": doc}),
        engine.subscribe(strict, {"id": doc}, on_error=errors.append),
    ):
        _eventually(lambda: len(errors) == 1)
    assert "negative value" in str(errors[0])


def test_joining_a_query_shows_the_commits_made_before_subscribe(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by a differential fuzz (every delivered value against a replay of the
    # commits): a subscription joining an execution whose worker had not yet seen a
    # commit of another process started with the value from before it, although
    # engine.query had just shown the commit (a subscription of its own showed it).
    import multiprocessing

    manager = engine._db.subscriptions
    monkeypatch.setattr(manager, "poll_interval", 3600.0)  # wakes, never polls
    doc = put(engine, "a", 1)
    with engine.subscribe(get_one, {"id": doc}) as first:
        process = multiprocessing.get_context("spawn").Process(
            target=_remote_patch, args=(engine.path, doc, 2)
        )
        process.start()
        process.join(60)
        assert process.exitcode == 0
        assert engine.query(get_one, {"id": doc}) == 2
        got: list[Any] = []
        with engine.subscribe(get_one, {"id": doc}, callback=got.append) as joined:
            assert joined.value == 2
            assert first.value == 2  # the shared execution caught up
            _eventually(lambda: got == [2])  # the callback's first value is that one too


#: Holds the next run of ``gated_get`` until released (set ``gate["armed"]`` first).
gate: dict[str, Any] = {"armed": False}


@query(args={"id": v.string()})
def gated_get(ctx: QueryCtx, id: str) -> Any:
    doc = ctx.db.get(id)  # read first: the snapshot is the one the worker opened
    if gate["armed"]:
        gate["armed"] = False
        gate["entered"].set()
        gate["release"].wait(10)
    return doc["value"]


def test_joining_during_a_rerun_does_not_hear_the_rerun_older_than_the_join(
    engine: Engine,
) -> None:
    # Found by the same fuzz, after the fix above: a subscription that joined while the
    # worker re-ran the shared query on a snapshot taken before subscribe() was called
    # heard that re-run's (older) value first in its callback, then the current one.
    doc = put(engine, "a", 0)
    gate.update(armed=False, entered=threading.Event(), release=threading.Event())
    with engine.subscribe(gated_get, {"id": doc}) as first:
        gate["armed"] = True
        writer = threading.Thread(
            target=lambda: engine.run(lambda ctx: ctx.db.patch(doc, {"value": 1}))
        )
        writer.start()  # its commit's re-run (on a snapshot with value 1) is held
        assert gate["entered"].wait(10)
        later = threading.Thread(
            target=lambda: engine.run(lambda ctx: ctx.db.patch(doc, {"value": 2}))
        )
        later.start()
        _eventually(lambda: engine.query(get_one, {"id": doc}) == 2)  # committed
        watched = first._watched
        threading.Thread(
            target=lambda: (
                _until(lambda: len(watched.subscribers) == 2),
                gate["release"].set(),
            )
        ).start()  # let the held re-run finish once the join below happened
        got: list[Any] = []
        with engine.subscribe(gated_get, {"id": doc}, callback=got.append) as joined:
            assert joined.value == 2
            _eventually(lambda: got != [])
            writer.join(10)
            later.join(10)
            engine.run(lambda ctx: ctx.db.patch(doc, {"value": 3}))
            _eventually(lambda: got[-1] == 3)
        assert got == [2, 3]  # never 1: that was before it subscribed


def test_joining_during_a_first_run_older_than_the_join_still_hears_a_first_value(
    engine: Engine,
) -> None:
    # The fix above leaves out a joiner whose subscribe() came after the snapshot of the
    # step that published: joining during the execution's first run, while a commit
    # that does not touch the query moves the head, it must still hear a first value.
    doc = put(engine, "a", 0)
    gate.update(armed=True, entered=threading.Event(), release=threading.Event())
    opened: list[Any] = []
    first = threading.Thread(target=lambda: opened.append(engine.subscribe(gated_get, {"id": doc})))
    first.start()  # its first run (on a snapshot with value 0) is held
    assert gate["entered"].wait(10)
    other = threading.Thread(target=lambda: put(engine, "b", 5))  # not read by gated_get
    other.start()
    _eventually(lambda: engine.query(count, {}) == 2)  # committed
    manager = engine._db.subscriptions
    threading.Thread(
        target=lambda: (
            _until(lambda: sum(len(w.subscribers) for w in manager._watched.values()) == 2),
            gate["release"].set(),
        )
    ).start()
    got: list[Any] = []
    with engine.subscribe(gated_get, {"id": doc}, callback=got.append) as joined:
        assert joined.value == 0
        _eventually(lambda: got == [0])
        first.join(10)
        other.join(10)
        opened[0].close()


def test_a_subscription_closed_by_another_callback_hears_nothing_more(engine: Engine) -> None:
    doc = put(engine, "a", 0)
    heard: list[tuple[Any, bool]] = []
    holder: dict[str, Any] = {}

    def close_b(value: Any) -> None:
        if value == 1:
            holder["b"].close()

    with engine.subscribe(get_one, {"id": doc}, callback=close_b):
        holder["b"] = engine.subscribe(
            get_one, {"id": doc}, callback=lambda value: heard.append((value, holder["b"].closed))
        )
        _eventually(lambda: heard == [(0, False)])
        engine.run(lambda ctx: ctx.db.patch(doc, {"value": 1}))
        engine.run(lambda ctx: ctx.db.patch(doc, {"value": 2}))
    assert heard == [(0, False)]


def test_subscribe_set_closes_what_it_opened_when_a_member_fails(engine: Engine) -> None:
    doc = put(engine, "a", 0)
    with pytest.raises(EngineError):
        engine.subscribe_set({"ok": (get_one, {"id": doc}), "bad": ("nope:missing", {})})
    assert engine._db.subscriptions.active == 0


@query(args={"key": v.string()})
def rows_of(ctx: QueryCtx, key: str) -> Any:
    rows = ctx.db.query("kv").filter(lambda q: q.eq(q.field("key"), key)).collect()
    return {"values": [row["value"] for row in rows]}


def test_subscribers_sharing_an_execution_each_get_their_own_value(engine: Engine) -> None:
    # Identical subscriptions share one execution, and got one result object: a caller
    # sorting value["values"] in place, or a callback editing it, changed what the other
    # subscriber (and its next .value, iteration and callback) saw.
    put(engine, "k", 2)
    put(engine, "k", 1)
    heard: list[Any] = []

    def edit(value: Any) -> None:
        value["values"].append("edited by a callback")
        heard.append(value)

    with (
        engine.subscribe(rows_of, {"key": "k"}) as a,
        engine.subscribe(rows_of, {"key": "k"}) as b,
        engine.subscribe(rows_of, {"key": "k"}, callback=edit) as c,
    ):
        assert a._watched is b._watched is c._watched  # one execution
        _eventually(lambda: len(heard) == 1)
        mine = a.value
        mine["values"].sort()
        assert mine["values"] == [1, 2] and a.value is mine  # a's own, kept while unchanged
        assert b.value == {"values": [2, 1]}
        assert next(iter(b)) == {"values": [2, 1]}
        put(engine, "k", 3)
        _eventually(lambda: len(heard) == 2)
        assert a.value == b.value == {"values": [2, 1, 3]}
        assert heard[1]["values"] == [2, 1, 3, "edited by a callback"]


def test_a_late_callback_leaves_the_value_handed_out_alone(engine: Engine) -> None:
    """Found by review: a callback queued for an older result, run late, replaced the
    subscription's copy of the current result, so an edit made to ``.value`` vanished
    with no new result. Callbacks now get copies of their own, made when they run."""
    put(engine, "k", 3)
    gate = threading.Event()
    heard: list[Any] = []

    def slow(value: Any) -> None:
        heard.append(value)
        if len(heard) == 1:
            gate.wait(5)  # the callback thread waits: the next two callbacks queue

    with engine.subscribe(rows_of, {"key": "k"}, callback=slow) as sub:
        _eventually(lambda: len(heard) == 1)
        put(engine, "k", 1)
        put(engine, "k", 2)
        mine = sub.value
        mine["values"].sort()
        gate.set()
        _eventually(lambda: len(heard) == 3)
        assert sub.value is mine and mine["values"] == [1, 2, 3]
        assert heard[1:] == [{"values": [3, 1]}, {"values": [3, 1, 2]}]


def test_subscribe_set_refuses_an_entry_that_is_not_a_ref_args_pair(engine: Engine) -> None:
    # Unpacked as is: (ref,) raised a bare "not enough values to unpack", a name alone
    # "too many values to unpack", and a two-letter string ran as (ref, args).
    doc = put(engine, "a", 0)
    for entry, said in [
        ((get_one,), "must be a pair"),
        ("notes:list", r"write \('notes:list', \{\}\)"),
        ("ab", "must be a pair"),
    ]:
        with pytest.raises(EngineError, match=said):
            engine.subscribe_set({"ok": (get_one, {"id": doc}), "bad": entry})  # type: ignore[dict-item]
        assert engine._db.subscriptions.active == 0  # nothing opened, nothing left open
    with pytest.raises(EngineError, match="takes a dict"):
        engine.subscribe_set([("ok", (get_one, {"id": doc}))])  # type: ignore[arg-type]
    with engine.subscribe_set({"ok": [get_one, {"id": doc}]}) as live:  # type: ignore[dict-item]
        assert live.value == {"ok": 0}


@query(args={"table": v.string(), "paginationOpts": v.any()})
def page_of(ctx: QueryCtx, table: str, paginationOpts: Any) -> Any:
    result = ctx.db.query(table).paginate(paginationOpts)
    return len(result["page"]), result["isDone"]


def test_a_page_of_a_table_yet_to_exist_grows_as_one_of_an_empty_table(engine: Engine) -> None:
    gone = engine.run(lambda ctx: ctx.db.insert("empty", {}))
    engine.run(lambda ctx: ctx.db.delete(gone))
    opts = {"numItems": 2, "cursor": None}
    with (
        engine.subscribe(page_of, {"table": "empty", "paginationOpts": opts}) as empty,
        engine.subscribe(page_of, {"table": "missing", "paginationOpts": opts}) as missing,
    ):
        assert empty.value == missing.value == [0, True]  # a Convex array
        engine.run(
            lambda ctx: [ctx.db.insert(t, {}) for t in ("empty", "missing") for _ in range(5)]
        )
        # The first page ended at the End: it keeps every row (Convex's journal).
        assert empty.value == missing.value == [5, True]


def test_a_callback_waiting_on_the_mutating_thread_does_not_stall_it(engine: Engine) -> None:
    # Found by review: while mutations waited for the callbacks of their changes too, a
    # callback taking a lock the mutating thread held stalled both for the 30 s timeout.
    doc = put(engine, "a", 0)
    app_lock = threading.Lock()
    seen: list[Any] = []

    def record(value: Any) -> None:
        with app_lock:
            seen.append(value)

    with engine.subscribe(get_one, {"id": doc}, callback=record):
        _eventually(lambda: seen == [0])
        started = time.monotonic()
        with app_lock:
            engine.run(lambda ctx: ctx.db.patch(doc, {"value": 1}))
        assert time.monotonic() - started < 5
        _eventually(lambda: seen == [0, 1])


def test_a_callback_waiting_on_the_mutating_thread_does_not_stall_its_next_mutation(
    engine: Engine,
) -> None:
    """Callbacks ran on the worker: a callback waiting for an app lock held by the thread
    that mutates stalled the worker, so that thread's *next* mutation waited the whole
    30 s for read-your-writes and then returned without it. Callbacks now run on a
    thread of their own, in order, and see every published value."""
    doc = put(engine, "a", 0)
    app_lock = threading.Lock()
    seen: list[Any] = []

    def record(value: Any) -> None:
        with app_lock:
            seen.append(value)

    with engine.subscribe(get_one, {"id": doc}, callback=record) as sub:
        assert _until(lambda: seen == [0])
        started = time.monotonic()
        with app_lock:
            engine.run(lambda ctx: ctx.db.patch(doc, {"value": 1}))
            engine.run(lambda ctx: ctx.db.patch(doc, {"value": 2}))
            assert sub.value == 2  # read-your-writes, while the callback still waits
        assert time.monotonic() - started < 5
        assert _until(lambda: seen == [0, 1, 2])


def test_iterating_a_joined_subscription_yields_its_value_once(engine: Engine) -> None:
    # Found by review: the joiner's first-value callback also woke its iterations, which
    # then yielded the unchanged value a second time.
    doc = put(engine, "a", 1)
    for _ in range(10):
        greeted = threading.Event()  # the joiner's callback heard its first value
        with (
            engine.subscribe(get_one, {"id": doc}),
            engine.subscribe(
                get_one, {"id": doc}, callback=lambda value, greeted=greeted: greeted.set()
            ) as joined,
        ):
            yielded: list[Any] = []

            def follow(sub: Any = joined) -> None:
                for value in sub:
                    yielded.append(value)

            reader = threading.Thread(target=follow)
            reader.start()
            # Waited for, not slept on: a reader starting late had yielded nothing yet.
            assert _until(lambda: len(yielded) > 0)
            assert greeted.wait(10)  # the worker greeted the joiner
            time.sleep(0.05)  # a second yield, had the greeting woken the reader
            assert yielded == [1]
        reader.join(5)


def test_subscribing_while_the_last_handle_closes_is_refused(engine: Engine) -> None:
    # Found by review: a subscribe racing close() started a worker on a closing database.
    doc = put(engine, "a", 1)
    engine._db.closing = True  # what the last close() sets before ending subscriptions
    try:
        with pytest.raises(EngineError, match="This engine is closed"):
            engine.subscribe(get_one, {"id": doc})
        assert engine._db.subscriptions.active == 0
    finally:
        engine._db.closing = False


def test_a_subscribe_racing_the_last_close_returns_or_is_refused(db_path: Path) -> None:
    # A subscribe registered just before close() ended every subscription waited for a
    # first value that the stopped worker never computed: the thread hung forever.
    for _ in range(15):
        engine = Engine.open(db_path, durability="none")
        doc = put(engine, "a", 1)
        outcomes: list[Any] = []

        def subscribe(engine: Engine = engine, doc: str = doc) -> None:
            try:
                with engine.subscribe(get_one, {"id": doc}) as subscription:
                    outcomes.append(subscription.value)
            except EngineError as error:
                outcomes.append(str(error))

        threads = [threading.Thread(target=subscribe) for _ in range(4)]
        for thread in threads:
            thread.start()
        engine.close()
        for thread in threads:
            thread.join(10)
        assert not any(thread.is_alive() for thread in threads), "a subscribe() hung"
        for outcome in outcomes:
            assert outcome == 1 or "This engine is closed" in outcome


#: The engine a query below calls from inside itself (a misuse the engine refuses).
_handle: list[Engine] = []
_refused: list[str] = []


@query(args={})
def writes_through_the_engine(ctx: QueryCtx) -> int:
    try:
        _handle[0].run(lambda c: c.db.insert("kv", {"key": "from a query", "value": 1}))
    except EngineError as error:
        _refused.append(str(error))
    return len(ctx.db.query("kv").collect())


def test_a_subscribed_query_cannot_call_the_engine(engine: Engine) -> None:
    # Found by the storage hunt: Engine.query refused engine calls from inside the
    # query, but a subscription's re-runs did not, so a query that wrote through the
    # engine handle committed on every re-run, and each commit re-ran it: for ever.
    _handle[:] = [engine]
    _refused.clear()
    with engine.subscribe(writes_through_the_engine, {}) as sub:
        assert sub.value == 0
        put(engine, "other", 1)
        assert sub.value == 1
    assert _refused and all("from inside a running query" in r for r in _refused)
    assert engine.run(lambda ctx: len(ctx.db.query("kv").collect())) == 1
    _handle.clear()


def _ended(subscription: Any) -> bool:
    """True once ``subscription.value`` raises EngineError (its worker failed)."""
    try:
        subscription.value  # noqa: B018
    except EngineError:
        return True
    return False


@pytest.mark.parametrize("patience", [10.0, 0.05])
def test_a_reader_table_full_for_a_moment_does_not_end_subscriptions(
    db_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    patience: float,
) -> None:
    # Found by review: the worker's poll found LMDB's reader table full (readers of every
    # process on the folder share its 1,022 slots), and that one StorageError ended every
    # subscription of the process for good ("Subscribe again"), though the next poll
    # would have found a slot. A table that stays full past the patience still ends them.
    monkeypatch.setattr(storage, "_MAX_READERS", 8)  # the first open sizes the table
    with Engine.open(db_path, durability="none") as engine:
        manager = engine._db.subscriptions
        monkeypatch.setattr(manager, "readers_full_patience", patience)
        doc = put(engine, "a", 1)
        subscription = engine.subscribe(get_one, {"id": doc})
        assert subscription.value == 1
        release = threading.Event()
        held: list[None] = []

        def hold() -> None:
            while not release.is_set():
                try:
                    engine.query(lambda ctx: (held.append(None), release.wait(10)))
                    return
                except StorageError:  # full: the worker's poll has a slot; try again
                    time.sleep(0.001)

        holders = [threading.Thread(target=hold) for _ in range(16)]
        for holder in holders:
            holder.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # every slot held, so the worker's poll fails
            try:
                engine.query(lambda ctx: None)
            except StorageError:
                break
        # Waited for, not slept on (the worker may poll late): its poll finds the table
        # full, then, past the short patience, the subscriptions end; the long patience
        # outlasts ten more polls.
        assert _until(lambda: "subscriptions wait for a free LMDB reader slot" in caplog.text)
        if patience < 1:
            assert _until(lambda: _ended(subscription))
        else:
            time.sleep(0.2)
            # A subscription joining meanwhile is served (reading the head needs a slot).
            with engine.subscribe(get_one, {"id": doc}) as joined:
                assert joined.value == 1
        release.set()
        for holder in holders:
            holder.join(10)
        assert held
        engine.run(lambda ctx: ctx.db.patch(doc, {"value": 2}))
        if patience < 1:
            with pytest.raises(EngineError, match="MDB_READERS_FULL"):
                subscription.value  # noqa: B018
        else:
            assert subscription.value == 2
        subscription.close()
    assert "subscriptions wait for a free LMDB reader slot" in caplog.text


def test_a_subscribe_with_none_followed_reads_no_log(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker found what commits touched by reading the log since the last commit it
    # saw, also when it followed no query: the first subscribe() after a quiet period
    # decoded every commit since (17.5 ms after 30k), to match them against nothing.
    doc = put(engine, "a", 1)
    with engine.subscribe(get_one, {"id": doc}) as sub:
        assert sub.value == 1
    for i in range(50):  # followed by no one
        put(engine, f"k{i}", i)
    stabbed = 0
    real_stab = IntervalIndex.stab

    def counting_stab(self: IntervalIndex, keys: Any) -> Any:
        nonlocal stabbed
        stabbed += 1
        return real_stab(self, keys)

    monkeypatch.setattr(IntervalIndex, "stab", counting_stab)
    with engine.subscribe(get_one, {"id": doc}) as sub:
        assert sub.value == 1
        assert stabbed == 0
        engine.run(lambda ctx: ctx.db.patch(doc, {"value": 2}))  # followed again: heard
        assert sub.value == 2
        assert stabbed >= 1


def test_iterations_of_an_empty_set_end_when_the_engine_closes(engine: Engine) -> None:
    """subscribe_set({}) makes a set with no members, which engine close never reached
    (it closes the sets of the subscriptions it follows): a 'for' or 'async for' over it
    hung after the engine closed. Found in review: the thread never ended."""
    live = engine.subscribe_set({})
    started = threading.Event()
    ended: list[str] = []

    def follow() -> None:
        for _ in live:
            started.set()
        ended.append("for")

    async def afollow() -> None:
        async for _ in live:
            started.set()
        ended.append("async for")

    threads = [
        threading.Thread(target=follow, daemon=True),
        threading.Thread(target=lambda: asyncio.run(afollow()), daemon=True),
    ]
    for thread in threads:
        started.clear()
        thread.start()
        assert started.wait(5)
    assert _until(lambda: len(live._async_waiters) == 1)  # the async for waits too
    engine.close()
    for thread in threads:
        thread.join(5)
    assert sorted(ended) == ["async for", "for"]
    with pytest.raises(EngineError, match="closed"):
        engine.subscribe_set({})  # as subscribe() after close


def test_an_asubscribe_dropped_with_its_event_loop_closes_what_it_made(engine: Engine) -> None:
    """An asubscribe whose event loop closed under it (the pending task's coroutine is
    closed, GeneratorExit, not cancelled) left the subscription its worker thread made
    open until the engine closed: only CancelledError handed it to be closed. Found in
    review: the query stayed watched after the loop was gone."""
    first_run_gate.clear()
    manager = engine._db.subscriptions
    loop = asyncio.new_event_loop()
    try:
        task = loop.create_task(engine.asubscribe(gated))

        async def first_run_begun() -> None:
            while not manager._watched:
                await asyncio.sleep(0.002)

        loop.run_until_complete(asyncio.wait_for(first_run_begun(), 5))
    finally:
        loop.close()  # the task still waits for the worker thread
    task.get_coro().close()  # what collecting the pending task does
    task._log_destroy_pending = False  # type: ignore[attr-defined]  # (it says so, as meant)
    first_run_gate.set()
    assert _until(lambda: not manager._watched)  # made after the loop closed, then closed


def _wait_until(condition: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_dropped_handle_without_callback_is_let_go(engine: Engine) -> None:
    import gc

    doc = put(engine, "a", 1)
    kept = engine.subscribe(get_one, {"id": doc})
    for key in ("b", "c"):
        engine.subscribe(by_key, {"key": key})  # dropped at once, never closed
    gc.collect()
    manager = engine._db.subscriptions
    assert _wait_until(lambda: manager.active == 1), manager.active
    calls.clear()
    engine.run(lambda ctx: ctx.db.insert("kv", {"key": "b", "value": 2}))
    engine.run(lambda ctx: ctx.db.patch(doc, {"value": 5}))
    assert kept.value == 5
    assert "b" not in calls and "c" not in calls  # let go: no longer re-run
    kept.close()
    assert _wait_until(lambda: manager.active == 0)


def test_a_dropped_handle_shared_with_a_kept_one_leaves_it_following(engine: Engine) -> None:
    import gc

    doc = put(engine, "a", 1)
    kept = engine.subscribe(get_one, {"id": doc})
    engine.subscribe(get_one, {"id": doc})  # the same execution, dropped
    gc.collect()
    time.sleep(0.1)  # the worker lets the dropped one go
    engine.run(lambda ctx: ctx.db.patch(doc, {"value": 7}))
    assert kept.value == 7
    assert list(zip(range(1), kept)) == [(0, 7)]
    kept.close()


def test_a_dropped_handle_with_a_callback_keeps_following(engine: Engine) -> None:
    import gc

    doc = put(engine, "a", 1)
    seen: list[Any] = []
    engine.subscribe(get_one, {"id": doc}, callback=seen.append)  # followed for good
    gc.collect()
    engine.run(lambda ctx: ctx.db.patch(doc, {"value": 3}))
    assert _wait_until(lambda: seen[-1:] == [3]), seen
    assert engine._db.subscriptions.active == 1


def test_a_dropped_set_lets_its_members_go(engine: Engine) -> None:
    import gc

    doc = put(engine, "a", 1)
    live = engine.subscribe_set({"one": (get_one, {"id": doc}), "b": (by_key, {"key": "b"})})
    assert live.value == {"one": 1, "b": None}
    del live
    gc.collect()
    assert _wait_until(lambda: engine._db.subscriptions.active == 0)


def test_an_iteration_keeps_its_subscription(engine: Engine) -> None:
    import gc

    doc = put(engine, "a", 1)
    values = iter(engine.subscribe(get_one, {"id": doc}))  # only the iterator is kept
    assert next(values) == 1
    gc.collect()
    engine.run(lambda ctx: ctx.db.patch(doc, {"value": 4}))
    assert next(values) == 4
    values.close()  # type: ignore[attr-defined]


def test_a_dropped_joiner_is_let_go(engine: Engine) -> None:
    import gc

    doc = put(engine, "a", 1)
    first = engine.subscribe(get_one, {"id": doc})
    joiner = engine.subscribe(get_one, {"id": doc})  # joins: the worker gives it the value
    assert joiner.value == 1
    manager = engine._db.subscriptions
    assert _wait_until(lambda: not manager._joined)  # delivered to, by the worker
    time.sleep(0.05)
    first.close()
    del joiner  # the worker's loop variable kept it (and its execution) for good
    gc.collect()
    assert _wait_until(lambda: manager.active == 0), manager.active
    assert _wait_until(lambda: manager._thread is None)  # nothing watched: the worker ends


def test_a_dropped_handle_whose_query_fails_is_let_go(engine: Engine) -> None:
    import gc

    doc = put(engine, "a", -1)
    failing = engine.subscribe(strict, {"id": doc})
    del failing  # its stored error's traceback kept the worker's step (and it) alive
    gc.collect()
    manager = engine._db.subscriptions
    assert _wait_until(lambda: manager.active == 0), manager.active


def test_a_closed_handle_collected_later_leaves_nothing_to_let_go(engine: Engine) -> None:
    import gc

    doc = put(engine, "a", 1)
    sub = engine.subscribe(get_one, {"id": doc})
    sub.close()
    manager = engine._db.subscriptions
    assert _wait_until(lambda: manager._thread is None)  # nothing watched: the worker ended
    del sub
    gc.collect()
    assert not manager._dropped  # it held the execution (and its result) until a new worker
