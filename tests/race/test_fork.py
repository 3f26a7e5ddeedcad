"""fork() after Engine.open: LMDB environments must not cross a fork, so a child gets
a clear error from the handles it inherited and a fresh environment from its own open."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine import Engine, EngineError, QueryCtx, query, storage, v

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def in_child(body: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Run ``body`` in a forked child; its JSON result, or fail if it hangs or dies."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        os.close(reader)
        try:
            answer = {"ok": body()}
        except BaseException as error:  # reported to the parent
            answer = {"error": f"{type(error).__name__}: {error}"}
        os.write(writer, json.dumps(answer).encode())
        os._exit(0)
    os.close(writer)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.02)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(reader)
        pytest.fail("the forked child hung")
    with os.fdopen(reader, "rb") as pipe:
        data = pipe.read()
    assert os.waitstatus_to_exitcode(status) == 0, data
    answer = json.loads(data)
    assert "ok" in answer, answer["error"]
    return answer["ok"]


def open_in_child(path: Path) -> str:
    """What ``Engine.open(path)`` does in a fork child: "opened", or its error."""
    try:
        Engine.open(path, durability="none").close()
    except EngineError as error:
        return str(error)
    return "opened"


def count(ctx: Any) -> int:
    return len(ctx.db.query("n").collect())


@query(args={})
def counted(ctx: QueryCtx) -> int:
    return count(ctx)


def test_a_child_cannot_use_an_inherited_engine_but_can_open_its_own(db_path: Path) -> None:
    with Engine.open(db_path) as engine:
        engine.run(lambda ctx: ctx.db.insert("n", {"by": "parent"}))

        def child() -> Any:
            try:
                engine.query(count)
                inherited = "no error"
            except EngineError as error:
                inherited = str(error)
            engine.close()  # allowed, and it must not touch the parent's environment
            with Engine.open(db_path) as own:
                own.run(lambda ctx: ctx.db.insert("n", {"by": "child"}))
                own.check()
                return [inherited, own.query(count)]

        inherited, seen = in_child(child)
        assert "fork" in inherited and "Engine.open" in inherited, inherited
        assert seen == 2
        assert engine.query(count) == 2  # the parent's handle still works
        engine.run(lambda ctx: ctx.db.insert("n", {"by": "parent"}))
        engine.check()


def test_forking_while_threads_commit_does_not_hang_the_child(db_path: Path) -> None:
    # Found by review: a child forked while a parent thread led a group commit inherited
    # that state (and the locks held) and hung for ever in its first mutation.
    with Engine.open(db_path, durability="none") as engine:
        stop = threading.Event()

        def write() -> None:
            while not stop.is_set():
                engine.run(lambda ctx: ctx.db.insert("n", {"by": "thread"}))

        threads = [threading.Thread(target=write) for _ in range(3)]
        for thread in threads:
            thread.start()
        try:
            for _ in range(5):

                def child() -> int:
                    with Engine.open(db_path, durability="none") as own:
                        for _ in range(10):
                            own.run(lambda ctx: ctx.db.insert("n", {"by": "child"}))
                        return len(own.query(lambda ctx: ctx.db.query("n").collect()))

                assert in_child(child) > 0
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        engine.check()
        # Page by page: the threads may insert more than a query may read (32,000 rows).
        by_child, cursor, done = 0, None, False
        while not done:
            page = engine.query(
                lambda ctx, c=cursor: ctx.db.query("n").paginate({"numItems": 4000, "cursor": c})
            )
            by_child += sum(d["by"] == "child" for d in page["page"])
            cursor, done = page["continueCursor"], page["isDone"]
        assert by_child == 50


def test_a_fork_during_a_long_transaction_leaves_the_parents_reader_alone(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fork waits (storage.FORK_WAIT) for this process's transactions to end, so that
    # the child can close what it inherited. A transaction still open then must not be
    # ended by the child (py-lmdb's close would clear the parent's reader slot, letting
    # writers reuse the pages it reads): the child cannot reopen the folder instead.
    monkeypatch.setattr(storage, "FORK_WAIT", 0.2)
    with Engine.open(db_path, durability="none") as engine:
        engine.run(lambda ctx: ctx.db.insert("n", {"by": "parent"}))
        inside, release = threading.Event(), threading.Event()

        def slow(ctx: Any) -> int:
            inside.set()
            release.wait(10)
            return count(ctx)

        reader = threading.Thread(target=engine.query, args=(slow,))
        reader.start()
        inside.wait(5)
        slots = engine._db.storage.env.readers()
        try:
            answer = in_child(lambda: open_in_child(db_path))
            assert "cannot be opened in this process" in answer and "spawn" in answer
            assert engine._db.storage.env.readers() == slots  # its slot is still there
        finally:
            release.set()
            reader.join()
        engine.run(lambda ctx: ctx.db.insert("n", {"by": "parent"}))
        assert engine.query(count) == 2
        engine.check()


def test_children_never_free_the_reader_slots_the_parent_reads_under(db_path: Path) -> None:
    # Found by review: a child that closed its inherited environment ended py-lmdb's
    # cached read txn, whose slot the parent reused right after the fork: the parent's
    # open reads lost their slots (106 of 120 forks) and saw pages rewritten under them.
    with Engine.open(db_path, durability="none") as engine:
        engine.run(lambda ctx: ctx.db.insert("n", {"by": "parent"}))
        storage_ = engine._db.storage
        me = os.getpid()
        forked = threading.Event()
        os.register_at_fork(after_in_parent=forked.set)
        for _ in range(25):
            forked.clear()
            held: list[Any] = []

            def hold() -> None:
                while True:  # reads begin as soon as the fork lets them in
                    txn = storage_.begin_read()
                    if forked.is_set():
                        held.append(txn)
                        return
                    storage_.end_read(txn)

            threads = [threading.Thread(target=hold) for _ in range(3)]
            for thread in threads:
                thread.start()
            try:
                in_child(lambda: None)  # the after-fork hook is what ran the close
            finally:
                for thread in threads:
                    thread.join()
            table = [line.split() for line in storage_.env.readers().splitlines()[1:]]
            mine = [row for row in table if int(row[0]) == me and row[2] != "-"]
            for txn in held:
                storage_.end_read(txn)
            assert len(mine) >= len(held) == 3, table
        engine.check()


def test_a_fork_from_inside_a_query_does_not_wait_for_it(db_path: Path) -> None:
    with Engine.open(db_path, durability="none") as engine:
        engine.run(lambda ctx: ctx.db.insert("n", {"by": "parent"}))

        def forking(ctx: Any) -> list[Any]:
            started = time.monotonic()

            answer = in_child(lambda: open_in_child(db_path))
            return [time.monotonic() - started, answer, count(ctx)]

        took, answer, seen = engine.query(forking)
        assert took < storage.FORK_WAIT, took  # its own transaction cannot end first
        assert "cannot be opened in this process" in answer and "spawn" in answer
        assert seen == 1


def test_subscriptions_a_child_inherits_raise_instead_of_waiting_for_ever(
    db_path: Path,
) -> None:
    # Found by review: iterating an inherited subscription in a child yielded the stale
    # value, then waited for ever for a worker that does not exist there.
    with Engine.open(db_path, durability="none") as engine:
        engine.run(lambda ctx: ctx.db.insert("n", {"by": "parent"}))
        subscription = engine.subscribe(counted, {})
        together = engine.subscribe_set({"n": (counted, {})})

        def child() -> list[str]:
            seen = []
            for attempt in (
                lambda: subscription.value,
                lambda: next(iter(subscription)),
                lambda: together.value,
            ):
                try:
                    attempt()
                    seen.append("no error")
                except EngineError as error:
                    seen.append(str(error))
            subscription.close()
            together.close()
            return seen

        for message in in_child(child):
            assert "forked from it" in message, message
        engine.run(lambda ctx: ctx.db.insert("n", {"by": "parent"}))
        assert subscription.value == 2 and together.value == {"n": 2}
        subscription.close()
        together.close()


def test_a_child_unwinding_an_inherited_query_leaves_the_parents_snapshot(
    db_path: Path,
) -> None:
    # Found by review: a fork from inside a query (allowed, without waiting) let the
    # child end that query normally, and its close aborted the inherited read txn:
    # py-lmdb's abort reset the parent's reader slot, and the parent's next reads in the
    # same query found index entries pointing to rewritten pages.
    parent = os.getpid()
    with Engine.open(db_path, durability="none") as engine:
        engine.run(lambda ctx: ctx.db.insert("n", {"by": "parent"}))
        storage_ = engine._db.storage

        def forking(ctx: Any) -> Any:
            pid = os.fork()
            if pid == 0:
                return "child"  # the query ends here, in the child
            os.waitpid(pid, 0)
            rows = [row.split() for row in storage_.env.readers().splitlines()[1:]]
            return [row[2] for row in rows if int(row[0]) == parent], count(ctx)

        try:
            result = engine.query(forking)
        except BaseException:
            if os.getpid() != parent:
                os._exit(1)
            raise
        if os.getpid() != parent:
            os._exit(0 if result == "child" else 2)
        slots, seen = result
        assert slots and "-" not in slots, slots  # the parent's txn still holds its slot
        assert seen == 1


@query(args={"k": v.int64()})
def failing(ctx: QueryCtx, k: int) -> int:
    count(ctx)
    raise ValueError(f"query {k} fails")


def test_failing_subscriptions_pin_no_reader_slot_and_a_child_still_reopens(
    db_path: Path,
) -> None:
    # Found by review: a subscription whose query raised kept the error, whose traceback
    # kept the snapshot's py-lmdb txn: one reader slot per failing subscription (about
    # 1,022 filled the table and killed the worker), and the environment alive, so no
    # fork child could reopen the folder.
    with Engine.open(db_path, durability="none") as engine:
        engine.run(lambda ctx: ctx.db.insert("n", {"by": "parent"}))
        before = len(engine._db.storage.env.readers().splitlines())
        subscriptions = [engine.subscribe(failing, {"k": k}) for k in range(40)]
        with pytest.raises(ValueError, match="query 3 fails"):
            _ = subscriptions[3].value
        after = len(engine._db.storage.env.readers().splitlines())
        assert after - before < 5, (before, after)
        assert in_child(lambda: open_in_child(db_path)) == "opened"
        for subscription in subscriptions:
            subscription.close()


def test_a_fork_child_does_not_keep_the_parents_executor_alive(db_path: Path) -> None:
    # Found by hunt: a fork child inherited the descriptor of the parent executor's shared
    # flock on scheduler.lock. Once the parent's executor was gone (closed, or the process
    # killed), the child (which cannot use the parent's engine) still held that lock, so
    # no executor starting afterwards found itself alone: actions orphaned by the parent
    # stayed inProgress for as long as the child lived.
    from engine.scheduler import patch_job
    from tests import app
    from tests.app import jobs

    engine = Engine.open(db_path, functions=app, durability="none", scheduler=False)
    job_id = engine.run(
        lambda ctx: ctx.scheduler.run_after(0, jobs.note_from_action, {"text": "x"})
    )
    # What a killed executor leaves behind: the job claimed, the action never finished.
    engine.run(lambda ctx: patch_job(ctx._txn, job_id, {"state": {"kind": "inProgress"}}))
    pid = os.fork()
    if pid == 0:  # a worker child that lives on and never touches the engine
        time.sleep(30)
        os._exit(0)
    try:
        engine.close()
        with Engine.open(db_path, functions=app, durability="none", scheduler=False) as again:
            state = again.run(lambda ctx: ctx.db.system.get(job_id))["state"]
            assert state == {"kind": "failed", "error": "Transient error while executing action"}
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
