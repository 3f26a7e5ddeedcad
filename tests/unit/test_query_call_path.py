"""The flat path of ``Engine.query`` (one call per point get): what it keeps doing.

``Runtime.query`` opens and closes its transaction inline and ``Transaction`` takes
its LMDB snapshot through the storage gate inline; the contexts and readers say where
a missing name is with descriptors, not ``__getattr__``. These tests pin what those
shortcuts must not lose.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import lmdb
import pytest

from engine import Engine
from engine.contexts import MutationCtx, QueryCtx
from engine.readers import DatabaseReader, DatabaseWriter


def test_contexts_and_readers_have_no_getattr_hook() -> None:
    # A class defining __getattr__ makes every attribute read of its instances slower
    # (CPython 3.11 does not specialize them): ~35 ns per ctx.db.get. The messages it
    # gave come from descriptors now.
    for cls in (QueryCtx, MutationCtx, DatabaseReader, DatabaseWriter):
        assert all("__getattr__" not in vars(base) for base in cls.__mro__), cls


def test_names_a_context_lacks_still_say_where_they_are(engine: Engine) -> None:
    def in_query(ctx: Any) -> list[Any]:
        return [
            hasattr(ctx.db, "insert"),
            hasattr(ctx, "scheduler"),
            getattr(ctx, "vector_search", "missing"),
        ]

    assert engine.query(in_query) == [False, False, "missing"]
    with pytest.raises(AttributeError, match=r"ctx\.db\.delete is not available in a query"):
        engine.query(lambda ctx: ctx.db.delete)
    with pytest.raises(AttributeError, match=r"ctx\.run_action is not available in a query"):
        engine.query(lambda ctx: ctx.run_action)
    with pytest.raises(AttributeError, match=r"ctx\.vector_search is not available in a mut"):
        engine.mutation(lambda ctx: ctx.vector_search)
    with pytest.raises(AttributeError) as unset:  # an unset slot: Python's message
        engine.mutation(lambda ctx: ctx._scheduler)
    assert "'_scheduler'" in str(unset.value)
    # The classes themselves do not have them (as before: no class attribute).
    for cls, name in ((QueryCtx, "scheduler"), (DatabaseReader, "insert")):
        with pytest.raises(AttributeError, match=f"has no attribute '{name}'"):
            getattr(cls, name)
    # What a mutation has is unaffected.
    assert engine.mutation(lambda ctx: [ctx.scheduler is not None, callable(ctx.db.delete)])


def test_dir_lists_what_a_context_has(engine: Engine) -> None:
    # The descriptors that say where a name is are not attributes: dir() (and so a
    # REPL's completion) does not offer them, as it did not when __getattr__ said it.
    in_query = engine.query(lambda ctx: (dir(ctx), dir(ctx.db)))
    for name in ("scheduler", "run_mutation", "run_action", "vector_search"):
        assert name not in in_query[0]
    assert {"db", "auth", "run_query"} <= set(in_query[0])
    assert not {"insert", "patch", "replace", "delete"} & set(in_query[1])
    assert {"get", "query", "normalize_id", "system"} <= set(in_query[1])
    in_mutation = engine.mutation(lambda ctx: (dir(ctx), dir(ctx.db)))
    assert {"scheduler", "run_mutation", "run_query"} <= set(in_mutation[0])
    assert not {"run_action", "vector_search"} & set(in_mutation[0])
    assert {"insert", "patch", "replace", "delete", "get"} <= set(in_mutation[1])


class _FlakyEnv:
    """An LMDB environment whose next ``begin()`` calls raise ``errors`` in turn."""

    def __init__(self, env: Any, errors: list[BaseException]) -> None:
        self._env = env
        self.errors = errors

    def begin(self, *args: Any, **kwargs: Any) -> Any:
        if self.errors:
            raise self.errors.pop(0)
        return self._env.begin(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env, name)


def test_a_snapshot_that_fails_to_begin_leaves_the_gate_balanced(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc_id = engine.run(lambda ctx: ctx.db.insert("people", {"name": "ada"}))
    storage = engine._db.storage
    flaky = _FlakyEnv(storage.env, [])
    monkeypatch.setattr(storage, "env", flaky)
    # An LMDB error at the first try is left to Storage.begin_read, which tries again.
    flaky.errors[:] = [lmdb.ReadersFullError("full")]
    assert engine.query(lambda ctx: ctx.db.get(doc_id))["name"] == "ada"
    assert storage._gate.active == [] and not flaky.errors
    # Anything else propagates, out of the gate.
    flaky.errors[:] = [KeyboardInterrupt()]
    with pytest.raises(KeyboardInterrupt):
        engine.query(lambda ctx: ctx.db.get(doc_id))
    assert storage._gate.active == []
    # An LMDB error on every try is the storage's error, out of the gate.
    flaky.errors[:] = [lmdb.Error("bad")] * 5
    with pytest.raises(Exception, match="bad") as raised:
        engine.query(lambda ctx: ctx.db.get(doc_id))
    flaky.errors.clear()
    assert type(raised.value).__module__.startswith("engine")
    assert storage._gate.active == []
    assert engine.query(lambda ctx: ctx.db.get(doc_id))["name"] == "ada"


def test_a_query_waits_for_a_pending_resize(engine: Engine) -> None:
    doc_id = engine.run(lambda ctx: ctx.db.insert("people", {"name": "ada"}))
    gate = engine._db.storage._gate
    held, quiet = gate.pause(5.0)
    assert held and quiet
    got: list[Any] = []
    try:
        reader = threading.Thread(
            target=lambda: got.append(engine.query(lambda c: c.db.get(doc_id)))
        )
        reader.start()
        time.sleep(0.2)
        assert got == []  # held back at the gate: the map may be remapped now
    finally:
        gate.resume()
    reader.join(10)
    assert got and got[0]["name"] == "ada"
    assert gate.active == []


def test_kept_errors_of_failing_inline_queries_hold_no_reader_slot(db_path: Path) -> None:
    # Runtime.query closes its snapshot inline: a local naming the LMDB txn in its frame,
    # which a kept traceback keeps, would keep one reader slot per kept error.
    kept: list[BaseException] = []
    with Engine.open(db_path, durability="none", scheduler=False) as engine:
        doc_id = engine.run(lambda ctx: ctx.db.insert("people", {"name": "ada"}))
        for _ in range(20):
            with pytest.raises(ZeroDivisionError) as raised:
                engine.query(lambda ctx: [ctx.db.get(doc_id), 1 / 0])
            kept.append(raised.value)
        lines = engine._db.storage.env.readers().splitlines()[1:]
        assert len([line for line in lines if line.strip()]) <= 1
