"""What an engine holds is given back: closing it leaves no thread, file descriptor,
LMDB reader slot or engine object behind, and failing calls whose errors the caller
keeps hold no reader slot.

These are bounded slices of soaks run by hand (1,000+ open/close cycles with the
scheduler, a subscription or an HTTP server; 200,000 calls from four threads): every
counter came back to its start there, and these tests keep it so.
"""

from __future__ import annotations

import gc
import os
import threading
import urllib.request
import weakref
from pathlib import Path

import pytest

import engine.engine as engine_module
from engine import ConvexError, Engine
from tests import app
from tests.waiting import wait_until


def _fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


def _readers(engine: Engine) -> int:
    """Slots of LMDB's reader table in use (``env.readers()`` prints a header line,
    then one line per slot)."""
    lines = engine._db.storage.env.readers().splitlines()[1:]
    return len([line for line in lines if line.strip()])


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts fds with /proc")
def test_open_close_cycles_leave_nothing_behind(db_path: Path) -> None:
    threads = set(threading.enumerate())
    fds = _fds()
    alive: list[weakref.ref[object]] = []
    for cycle in range(12):
        # The scheduler's worker, the subscriptions' two threads, and (some cycles) an
        # HTTP server with a connection and the scheduled actions' event loop.
        engine = Engine.open(db_path, functions=app, durability="none")
        with engine.subscribe("notes:texts", {}) as sub:
            engine.mutation("notes:add", {"text": str(cycle)})
            assert str(cycle) in sub.value
        if cycle % 4 == 0:
            server = engine.serve_http("127.0.0.1", 0)
            with urllib.request.urlopen(server.url + "/notes", timeout=10) as answer:
                assert answer.status == 200
            engine.mutation("jobs:schedule_action", {"text": str(cycle)})
            engine.finish_scheduled_functions()
        alive += [weakref.ref(engine), weakref.ref(engine._db), weakref.ref(engine._runtime)]
        alive.append(weakref.ref(engine._db.storage))
        engine.close()
    real = engine.path
    del engine, sub, server
    gc.collect()
    assert [ref() for ref in alive if ref() is not None] == []
    assert real not in engine_module._DATABASES
    wait_until(
        lambda: not [t for t in threading.enumerate() if t not in threads and t.is_alive()],
        describe=lambda: [t.name for t in threading.enumerate() if t not in threads],
    )
    wait_until(lambda: not _fds() - fds, describe=lambda: sorted(_fds() - fds))


def test_kept_errors_of_failing_calls_hold_no_reader_slot(db_path: Path) -> None:
    kept: list[BaseException] = []
    with Engine.open(db_path, functions=app, durability="none", scheduler=False) as engine:
        for _ in range(20):
            for call in (
                lambda: engine.query("notes:wrong_return", {}),
                lambda: engine.mutation("notes:fail_with_data", {}),
                lambda: engine.action("jobs:note_now", {"text": "x", "fail": True}),
            ):
                with pytest.raises(Exception) as raised:
                    call()
                kept.append(raised.value)  # with its traceback, and the frames in it
        assert any(isinstance(error, ConvexError) for error in kept)
        # At most this thread's idle slot, not one per kept error.
        assert _readers(engine) <= 1
