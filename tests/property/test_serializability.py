"""Serializability, Elle-style: a list-append workload run by concurrent threads.

Each transaction is a random program of reads and appends on a few keys
(one document per key holding a list). Threads run batches of programs at
once, with random pauses between operations so that they interleave and
conflict. Every committed transaction records what it read and the commit
timestamp it got (the snapshot timestamp for read-only ones).

The check: replaying the committed transactions one at a time in
timestamp order against a plain dict reproduces every read exactly. A lost
update, write skew, phantom or dirty read would make some recorded read
disagree with the replay.
"""

from __future__ import annotations

import itertools
import random
import shutil
import tempfile
import threading
import time
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from engine import Engine
from engine.readers import DatabaseWriter

KEYS = ["k0", "k1", "k2"]
operation = st.tuples(st.sampled_from(["r", "a"]), st.sampled_from(KEYS))
program = st.lists(operation, min_size=1, max_size=4)


class ListAppend(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.folder = tempfile.mkdtemp()
        self.engine = Engine.open(self.folder, durability="none")
        self.engine._db.retry.retries = 200
        self.engine._db.retry.base = 0.0005
        self.ids = self.engine.run(
            lambda ctx: {k: ctx.db.insert("lists", {"key": k, "items": []}) for k in KEYS}
        )
        self.counter = itertools.count(1)
        self.history: list[tuple[tuple[int, int], list[tuple[str, str, Any]]]] = []
        self.lock = threading.Lock()

    def teardown(self) -> None:
        self.engine.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _run(self, ops: list[tuple[str, str]], seed: int) -> None:
        values = {i: next(self.counter) for i, op in enumerate(ops) if op[0] == "a"}

        def body(txn: Any) -> list[tuple[str, str, Any]]:
            rng = random.Random(seed)
            db = DatabaseWriter(txn)
            observed: list[tuple[str, str, Any]] = []
            for i, (kind, key) in enumerate(ops):
                doc = db.get(self.ids[key])
                assert doc is not None
                if kind == "r":
                    observed.append(("r", key, list(doc["items"])))
                else:
                    db.patch(self.ids[key], {"items": [*doc["items"], values[i]]})
                    observed.append(("a", key, values[i]))
                time.sleep(rng.random() * 0.002)
            return observed

        observed, ts = self.engine._db.run(body)
        read_only = all(kind == "r" for kind, _ in ops)
        with self.lock:
            self.history.append(((ts, 1 if read_only else 0), observed))

    @rule(programs=st.lists(program, min_size=2, max_size=5), seed=st.integers(0, 2**16))
    def concurrent_batch(self, programs: list[list[tuple[str, str]]], seed: int) -> None:
        errors: list[BaseException] = []

        def worker(ops: list[tuple[str, str]], s: int) -> None:
            try:
                self._run(ops, s)
            except BaseException as error:
                errors.append(error)

        threads = [
            threading.Thread(target=worker, args=(ops, seed + i)) for i, ops in enumerate(programs)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors

    @invariant()
    def serializable_in_commit_order(self) -> None:
        state: dict[str, list[int]] = {k: [] for k in KEYS}
        for _, observed in sorted(self.history, key=lambda h: h[0]):
            for kind, key, value in observed:
                if kind == "r":
                    assert value == state[key], (
                        f"read of {key} saw {value}, serial replay has {state[key]}"
                    )
                else:
                    state[key].append(value)
        final = self.engine.run(
            lambda ctx: {d["key"]: d["items"] for d in ctx.db.query("lists").collect()}
        )
        assert final == state
        self.engine.check()


TestListAppend = ListAppend.TestCase
TestListAppend.settings = settings(
    max_examples=15,
    stateful_step_count=6,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
