"""engine.commit: validation against the log, retention, group commit statistics."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from engine import Engine, EngineError, commit, define_schema, define_table
from tests import app
from tests.waiting import wait_until


def test_snapshot_older_than_the_log_floor_conflicts_then_retries(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(commit, "LOG_RETENTION_NS", 0)
    monkeypatch.setattr(commit, "_PRUNE_EVERY", 1)
    doc = engine.run(lambda ctx: ctx.db.insert("t", {"n": 0}))
    runs: list[int] = []
    gate = threading.Event()
    committed = threading.Event()

    def slow(ctx):  # type: ignore[no-untyped-def]
        runs.append(1)
        row = ctx.db.get(doc)
        if len(runs) == 1:
            gate.set()
            assert committed.wait(10)  # another commit prunes the log meanwhile
        ctx.db.patch(doc, {"n": row["n"] + 1})

    def two_commits() -> None:
        gate.wait(10)
        engine.run(lambda ctx: ctx.db.insert("u", {}))
        engine.run(lambda ctx: ctx.db.insert("u", {}))  # prunes the first: floor > snapshot
        committed.set()

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
    committed = threading.Event()

    def body(ctx):  # type: ignore[no-untyped-def]
        runs.append(1)
        ctx.db.get(a)
        if len(runs) == 1:
            gate.set()
            assert committed.wait(10)  # the other commit lands while this one runs
        ctx.db.patch(a, {"seen": True})

    def other_commit() -> None:
        gate.wait(10)
        engine.run(lambda ctx: ctx.db.patch(b, {"x": 1}))
        committed.set()

    other = threading.Thread(target=other_commit)
    other.start()
    engine.run(body)
    other.join()
    assert runs == [1]


def test_group_commit_batches_concurrent_transactions(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    committer = engine._db.committer
    # The table exists first: eight first inserts racing to create it would conflict, and
    # groups of conflicts alone could make as many groups as commits on a loaded machine.
    engine.run(lambda ctx: ctx.db.insert("t", {}))
    stats = committer.stats
    before = dict(stats)
    storage = engine._db.storage
    write = storage.write
    held = threading.Event()

    def first_write_waits_for_a_queue(fn):  # type: ignore[no-untyped-def]
        # The first group holds the lead until other commits queue behind it, so the
        # next group has several (on a loaded machine the threads could otherwise
        # happen to commit one at a time, and the assertion below would flake).
        if not held.is_set():
            held.set()
            deadline = time.monotonic() + 5
            while len(committer._queue) < 2 and time.monotonic() < deadline:
                time.sleep(0.001)
        return write(fn)

    monkeypatch.setattr(storage, "write", first_write_waits_for_a_queue)
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
    conflicts = stats["conflicts"] - before["conflicts"]
    assert commits == 160
    assert groups < commits + conflicts  # some LMDB write txn held more than one request


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
    released: list[float] = []

    def release() -> None:
        released.append(time.perf_counter())
        committer.idle.set()

    timer = threading.Timer(0.03, release)
    started = time.perf_counter()  # before the timer starts: it cannot fire before this
    timer.start()
    engine.run(lambda ctx: ctx.db.insert("t", {}))
    ended = time.perf_counter()
    timer.join()
    # The writer waited until the leader was done (the timer set idle), or for its whole
    # bounded pause if the timer thread was late; one that did not pause returns at once.
    assert ended >= released[0] or ended - started >= 0.045, (ended - started, released)
    # Never for long: a writer waits at most 50 ms per pause even if nobody sets it.
    committer.idle.clear()
    started = time.perf_counter()
    engine.run(lambda ctx: ctx.db.insert("t", {}))
    assert time.perf_counter() - started < 1.0
    committer.idle.set()


def _first_group_stalls(
    monkeypatch: pytest.MonkeyPatch, *, seconds: float, then: Exception | None = None
) -> threading.Event:
    """Make the first group's apply sleep ``seconds`` (then raise ``then``, if given).

    Returns an event set when that apply starts.
    """
    started = threading.Event()
    real_apply = commit.Committer._apply

    def apply(self: commit.Committer, wtxn: object, batch: list[commit.CommitRequest]) -> object:
        if not started.is_set():
            started.set()
            time.sleep(seconds)
            if then is not None:
                raise then
        return real_apply(self, wtxn, batch)

    monkeypatch.setattr(commit.Committer, "_apply", apply)
    return started


def _request() -> commit.CommitRequest:
    request = commit.CommitRequest(0, None, 0, {}, [], [], [], [], None)  # type: ignore[arg-type]
    request.wake = threading.Lock()
    request.wake.acquire()
    return request


def test_a_withdrawn_request_passes_the_lead_on(engine: Engine) -> None:
    """A thread interrupted just as the lead reached it hands the lead to the next one."""
    committer = commit.Committer(engine._db)
    first, second = _request(), _request()
    committer._leading = True
    committer._queue = [first, second]
    first.lead = True  # as `_finish` marks the successor
    committer._withdraw(first)
    assert committer._queue == [second] and first.done and first.error is not None
    assert second.lead and second.wake.acquire(blocking=False)  # its thread was woken to lead
    second.done = True
    committer._queue.clear()
    committer._withdraw(second)  # no longer queued: nothing happens
    assert committer._leading
    # A withdrawn successor with nobody behind it drops the lead.
    third = _request()
    committer._queue = [third]
    third.lead = True
    committer._withdraw(third)
    assert not committer._leading and committer._queue == []


def test_an_interrupted_waiter_withdraws_and_commits_keep_flowing(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    import signal

    class Interrupted(Exception):
        pass

    def raise_interrupted(signum: int, frame: object) -> None:
        raise Interrupted

    applying = _first_group_stalls(monkeypatch, seconds=0.4)
    previous = signal.signal(signal.SIGUSR1, raise_interrupted)
    try:
        leader = threading.Thread(
            target=lambda: engine.run(lambda ctx: ctx.db.insert("t", {"who": "leader"}))
        )
        leader.start()
        assert applying.wait(5)
        main = threading.main_thread().ident
        assert main is not None
        timer = threading.Timer(0.1, signal.pthread_kill, (main, signal.SIGUSR1))
        timer.start()
        with pytest.raises(Interrupted):
            engine.run(lambda ctx: ctx.db.insert("t", {"who": "interrupted"}))
        timer.join()
        leader.join(5)
        assert not leader.is_alive()
    finally:
        signal.signal(signal.SIGUSR1, previous)
    # The lead was not lost: other threads still commit.
    workers = [
        threading.Thread(
            target=lambda: engine.run(lambda ctx: ctx.db.insert("t", {"who": "after"}))
        )
        for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(5)
        assert not worker.is_alive()
    who = sorted(r["who"] for r in engine.query(lambda ctx: ctx.db.query("t").collect()))
    assert who == ["after"] * 4 + ["leader"]  # the withdrawn insert was never applied
    engine.check()


def test_a_group_that_fails_fails_every_member_and_the_next_group_runs(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first group stalls (so the others queue behind it), then fails.
    entered = _first_group_stalls(monkeypatch, seconds=0.2, then=RuntimeError("disk on fire"))
    outcomes: list[str] = []

    def insert(tag: str) -> None:
        try:
            engine.run(lambda ctx: ctx.db.insert("t", {"tag": tag}))
            outcomes.append("ok")
        except RuntimeError as error:
            outcomes.append(str(error))

    first = threading.Thread(target=insert, args=("first",))
    first.start()
    assert entered.wait(5)
    rest = [threading.Thread(target=insert, args=(f"t{i}",)) for i in range(6)]
    for thread in rest:
        thread.start()
    for thread in [first, *rest]:
        thread.join(5)
        assert not thread.is_alive()
    assert outcomes[0] == "disk on fire"
    assert outcomes.count("ok") == 6  # queued behind the failed group: the next leader ran them
    assert len(engine.query(lambda ctx: ctx.db.query("t").collect())) == 6
    engine.check()


class _Stop(BaseException):
    """Stands in for a KeyboardInterrupt (which would stop pytest itself)."""


def _first_then_a_group_of_three(
    engine: Engine, entered: threading.Event, release: threading.Event
) -> dict[str, BaseException | None]:
    """Insert "first" in a thread; once its commit is held (the caller's patch sets
    ``entered`` and waits for ``release``), queue inserts "t0".."t2" behind it (the next
    group), release it, and return each insert's outcome: None or what it raised."""
    outcomes: dict[str, BaseException | None] = {}

    def insert(tag: str) -> None:
        try:
            engine.run(lambda ctx: ctx.db.insert("t", {"tag": tag}))
            outcomes[tag] = None
        except BaseException as error:  # _Stop included: it is what is checked
            outcomes[tag] = error

    first = threading.Thread(target=insert, args=("first",))
    first.start()
    assert entered.wait(5)
    group = [threading.Thread(target=insert, args=(f"t{i}",)) for i in range(3)]
    for thread in group:
        thread.start()
    committer = engine._db.committer
    wait_until(lambda: len(committer._queue) == 3, describe=lambda: committer._queue)
    release.set()
    for thread in [first, *group]:
        thread.join(5)
        assert not thread.is_alive()
    return outcomes


def test_an_interrupt_of_the_leader_reaches_only_its_own_thread(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A KeyboardInterrupt in the thread applying a group is that thread's: the other
    members' threads get an EngineError they can handle, not the interrupt.

    Found by a scratch repro: a group's leader raising KeyboardInterrupt made every
    thread of its group raise KeyboardInterrupt too (the group's error was shared).
    """
    entered, release = threading.Event(), threading.Event()
    real_apply = commit.Committer._apply

    def apply(self: commit.Committer, wtxn: object, batch: list[commit.CommitRequest]) -> object:
        if not entered.is_set():  # the first group waits while the others queue
            entered.set()
            assert release.wait(5)
        elif len(batch) > 1:  # the second group's leader is interrupted mid-apply
            raise _Stop
        return real_apply(self, wtxn, batch)

    monkeypatch.setattr(commit.Committer, "_apply", apply)
    outcomes = list(_first_then_a_group_of_three(engine, entered, release).values())
    assert outcomes.count(None) == 1  # the first group committed
    stopped = [error for error in outcomes if isinstance(error, _Stop)]
    others = [error for error in outcomes if error is not None and not isinstance(error, _Stop)]
    assert len(stopped) == 1, outcomes  # only the interrupted thread sees the interrupt
    assert len(others) == 2 and all(isinstance(error, EngineError) for error in others), outcomes
    assert "interrupted" in str(others[0]) and "Run the mutation again" in str(others[0])
    assert [r["tag"] for r in engine.query(lambda ctx: ctx.db.query("t").collect())] == ["first"]
    engine.run(lambda ctx: ctx.db.insert("t", {"tag": "after"}))  # commits still flow


def test_an_interrupt_after_the_group_was_written_reports_its_members_committed(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An interrupt that reaches the leader once LMDB committed its group (a Ctrl-C during
    the commit's syncs is raised as the commit returns) leaves the group written: the
    other members' threads are told they committed, not "not applied: run it again".

    Found in review: the members got that EngineError though their rows were in the
    database, so a caller that ran the mutation again wrote it twice.
    """
    engine.run(lambda ctx: ctx.db.insert("t", {"tag": "made"}))  # the table: no conflicts
    entered, release = threading.Event(), threading.Event()
    storage = engine._db.storage
    real_write = storage.write
    writes = [0]

    def write(fn: Any) -> Any:
        writes[0] += 1
        if writes[0] == 1:  # the first group waits while the others queue
            entered.set()
            assert release.wait(5)
        result = real_write(fn)
        if writes[0] == 2:  # the second group is written; the interrupt comes as the
            raise _Stop  # commit returns (a Ctrl-C during its syncs)
        return result

    monkeypatch.setattr(storage, "write", write)
    outcomes = _first_then_a_group_of_three(engine, entered, release)
    monkeypatch.setattr(storage, "write", real_write)
    stored = sorted(r["tag"] for r in engine.query(lambda ctx: ctx.db.query("t").collect()))
    assert stored == ["first", "made", "t0", "t1", "t2"]  # the second group was written
    stopped = [tag for tag, error in outcomes.items() if isinstance(error, _Stop)]
    assert len(stopped) == 1, outcomes  # the leader's own thread has the interrupt
    assert sorted(tag for tag, error in outcomes.items() if error is None) == sorted(
        set(stored) - {"made", *stopped}
    ), outcomes  # every other member is told it committed, as it did
    engine.run(lambda ctx: ctx.db.insert("t", {"tag": "after"}))  # commits still flow


def test_group_commit_grows_a_full_map(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Eight writers on a 1 MiB map: groups hit MapFull, the map grows, nothing is lost."""
    import functools

    import engine.engine as engine_module
    from engine.storage import open_storage

    monkeypatch.setattr(
        engine_module, "open_storage", functools.partial(open_storage, map_size=1 << 20)
    )
    with Engine.open(tmp_path / "db", durability="none") as small:
        before = small._db.storage.map_size

        def worker(t: int) -> None:
            for i in range(60):
                small.run(lambda ctx: ctx.db.insert("t", {"t": t, "i": i, "pad": "x" * 2000}))

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
            assert not thread.is_alive()
        assert small._db.storage.map_size > before
        rows = small.query(lambda ctx: ctx.db.query("t").collect())
        assert sorted((r["t"], r["i"]) for r in rows) == [
            (t, i) for t in range(8) for i in range(60)
        ]
        small.check()


class _Interrupted(Exception):
    """Stands in for a KeyboardInterrupt (which would stop pytest itself)."""


class _InterruptingLock:
    """The committer's lock, raising :class:`_Interrupted` once where ``at`` says.

    ``at(stage, entries)``: stage ``"enter"`` (before acquiring) or ``"exit"``
    (after releasing), ``entries`` counting ``with`` blocks so far.
    """

    def __init__(self, real: Any, at: Any) -> None:
        self.real, self.at, self.entries, self.armed = real, at, 0, True

    def _maybe_raise(self, stage: str) -> None:
        if self.armed and self.at(stage, self.entries):
            self.armed = False
            raise _Interrupted

    def __enter__(self) -> None:
        self.entries += 1
        self._maybe_raise("enter")
        self.real.acquire()

    def __exit__(self, *exc: object) -> None:
        self.real.release()
        if exc[0] is None:
            self._maybe_raise("exit")

    def acquire(self, *args: Any) -> bool:
        return bool(self.real.acquire(*args))

    def release(self) -> None:
        self.real.release()


def _commit_interrupted(engine: Engine, at: Any) -> None:
    """One insert whose commit is interrupted where ``at`` says (see _InterruptingLock)."""
    committer = engine._db.committer
    real = committer._lock
    committer._lock = _InterruptingLock(real, at)  # type: ignore[assignment]
    try:
        with pytest.raises(_Interrupted):
            engine.run(lambda ctx: ctx.db.insert("t", {"x": 1}))
    finally:
        committer._lock = real


def test_a_leader_interrupted_right_after_taking_the_queue_passes_the_lead_on(
    engine: Engine,
) -> None:
    """An exception between taking the queue and applying it must not strand the lead.

    The lock raises on exit just after the leader took the queue: where a
    KeyboardInterrupt could land. (Found by a review.)
    """
    committer = engine._db.committer
    _commit_interrupted(engine, lambda stage, _: stage == "exit" and committer._queue == [])
    done = threading.Event()
    other = threading.Thread(
        target=lambda: (engine.run(lambda ctx: ctx.db.insert("t", {"x": 2})), done.set())
    )
    other.start()
    assert done.wait(5), "the lead was stranded: the next commit never ran"
    other.join()
    assert not committer._leading
    assert [r["x"] for r in engine.query(lambda ctx: ctx.db.query("t").collect())] == [2]


def test_a_leader_interrupted_before_taking_the_queue_withdraws_and_passes_the_lead_on(
    engine: Engine,
) -> None:
    committer = engine._db.committer
    # The second `with` block of a commit is the leader taking the queue.
    _commit_interrupted(engine, lambda stage, entries: stage == "enter" and entries == 2)
    assert committer._queue == [] and not committer._leading
    engine.run(lambda ctx: ctx.db.insert("t", {"x": 2}))
    assert [r["x"] for r in engine.query(lambda ctx: ctx.db.query("t").collect())] == [2]


def test_short_lived_processes_prune_the_log(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by review: pruning ran every 512 commits of one process, so a database
    # written only by processes that make fewer commits (scripts, cron jobs) kept its
    # whole log. Each open below is a new Database, as a new process would have.
    monkeypatch.setattr(commit, "LOG_RETENTION_NS", 0)
    for _ in range(5):
        with Engine.open(db_path, durability="none") as engine:
            for _ in range(20):
                engine.run(lambda ctx: ctx.db.insert("t", {}))
    with Engine.open(db_path, durability="none") as engine:
        storage = engine._db.storage
        with storage.read() as rtxn:
            kept = rtxn.stat(storage.log)["entries"]
        assert kept <= 20  # the last open's commits; its first pruned the earlier ones
        assert len(engine.query(lambda ctx: ctx.db.query("t").collect())) == 100
        engine.check()


def _race(engine: Engine, reader: Any, writer: Any) -> int:
    """Run ``reader`` as a mutation; after its first run has read, commit ``writer``.

    Returns how many times the reader ran (2: it conflicted and re-ran).
    """
    runs: list[int] = []
    read, written = threading.Event(), threading.Event()

    def body(ctx):  # type: ignore[no-untyped-def]
        runs.append(1)
        seen = reader(ctx)
        if len(runs) == 1:
            read.set()
            assert written.wait(5)
        ctx.db.insert("out", {"seen": seen})

    def other() -> None:
        assert read.wait(5)
        engine.run(writer)
        written.set()

    thread = threading.Thread(target=other)
    thread.start()
    engine.run(body)
    thread.join()
    return len(runs)


def _indexed(db_path: Path) -> Engine:
    schema = define_schema(
        {"d": define_table({}).index("by_x", ["x"]), "out": define_table({})},
        schema_validation=False,
    )
    return Engine.open(db_path, schema=schema, durability="none")


def test_a_patch_moving_a_document_out_of_a_read_range_conflicts(db_path: Path) -> None:
    # A mutant that logged only the new index keys of a patched document survived
    # every test: the reader of by_x == 1 committed a stale count.
    with _indexed(db_path) as engine:
        doc = engine.run(lambda ctx: ctx.db.insert("d", {"x": 1}))

        def count_ones(ctx):  # type: ignore[no-untyped-def]
            return len(ctx.db.query("d").with_index("by_x", lambda q: q.eq("x", 1)).collect())

        assert _race(engine, count_ones, lambda ctx: ctx.db.patch(doc, {"x": 2})) == 2
        assert [r["seen"] for r in engine.run(lambda ctx: ctx.db.query("out").collect())] == [0]


def test_an_insert_behind_a_first_row_conflicts_with_a_later_full_read(db_path: Path) -> None:
    # .first() reads [lo, first row]; .collect() of the same range reads all of it. The
    # read set merges the two overlapping intervals: a merge that kept the shorter end
    # (a mutant that survived every test) lost the insert below.
    with _indexed(db_path) as engine:
        engine.run(lambda ctx: ctx.db.insert("d", {"x": 1}))

        def first_then_all(ctx):  # type: ignore[no-untyped-def]
            query = lambda: ctx.db.query("d").with_index("by_x", lambda q: q.gte("x", 0))
            query().first()
            return len(query().collect())

        assert _race(engine, first_then_all, lambda ctx: ctx.db.insert("d", {"x": 5})) == 2


def test_a_failing_commit_listener_neither_fails_the_commit_nor_silences_the_others(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Listeners run after the group is in the database; one that raised made the
    leading thread's mutation raise, though it had committed, and the listeners after it
    (subscriptions, the scheduler) were not told."""
    heard: list[int] = []

    def failing(requests: Any) -> None:
        raise RuntimeError("listener broke")

    with Engine.open(db_path, durability="none", functions=app, scheduler=False) as engine:
        subscription = engine.subscribe("notes:texts")
        assert subscription.value == []
        listeners = engine._db.listeners
        listeners[:0] = [failing]
        listeners.append(lambda requests: heard.append(len(requests)))
        with caplog.at_level("ERROR", logger="engine.database"):
            new_id = engine.mutation("notes:add", {"text": "kept"})
        assert engine.run(lambda ctx: ctx.db.get(new_id))["text"] == "kept"
        assert heard == [1]
        assert subscription.value == ["kept"]  # the subscriptions' listener was told
        assert "listener broke" in caplog.text
        listeners.remove(failing)
        subscription.close()
        engine.check()
