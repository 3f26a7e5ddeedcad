"""Serializability, Elle-style: a list-append workload run by concurrent threads.

Each transaction is a random program of operations on a few keys: reads and
appends of one list document per key (``r``, ``a``), and on rows filed in a
bucket per key, read through an index: scanning a bucket (``s``), inserting a
row into it (``i``) and moving its smallest row to the next bucket (``m``, a
patch that moves an index key: the scans it changes are phantoms). Threads
run batches of programs at once, with random pauses between operations so
that they interleave and conflict. Every committed transaction records what
it read and the commit timestamp it got (the snapshot timestamp for
read-only ones).

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

from engine import Engine, define_schema, define_table
from engine.readers import DatabaseWriter

KEYS = ["k0", "k1", "k2"]
NEXT = {k: KEYS[(i + 1) % len(KEYS)] for i, k in enumerate(KEYS)}
operation = st.tuples(st.sampled_from(["r", "a", "s", "i", "m"]), st.sampled_from(KEYS))
SCHEMA = define_schema(
    {"rows": define_table({}).index("by_bucket", ["bucket"])}, schema_validation=False
)
program = st.lists(operation, min_size=1, max_size=4)


class ListAppend(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.folder = tempfile.mkdtemp()
        self.engine = Engine.open(self.folder, schema=SCHEMA, durability="none")
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
        values = {i: next(self.counter) for i, op in enumerate(ops) if op[0] in "ai"}

        def body(txn: Any) -> list[tuple[str, str, Any]]:
            rng = random.Random(seed)
            db = DatabaseWriter(txn)
            observed: list[tuple[str, str, Any]] = []
            for i, (kind, key) in enumerate(ops):
                if kind in "ra":
                    doc = db.get(self.ids[key])
                    assert doc is not None
                    if kind == "r":
                        observed.append(("r", key, list(doc["items"])))
                    else:
                        db.patch(self.ids[key], {"items": [*doc["items"], values[i]]})
                        observed.append(("a", key, values[i]))
                elif kind == "i":
                    db.insert("rows", {"bucket": key, "tag": values[i]})
                    observed.append(("i", key, values[i]))
                else:
                    rows = (
                        db.query("rows")
                        .with_index("by_bucket", lambda q, k=key: q.eq("bucket", k))
                        .collect()
                    )
                    tags = sorted(r["tag"] for r in rows)
                    if kind == "s":
                        observed.append(("s", key, tags))
                    else:  # "m": move the smallest row to the next bucket
                        if tags:
                            row = next(r for r in rows if r["tag"] == tags[0])
                            db.patch(row["_id"], {"bucket": NEXT[key]})
                        observed.append(("m", key, tags[0] if tags else None))
                time.sleep(rng.random() * 0.002)
            return observed

        observed, ts = self.engine._db.run(body)
        read_only = all(kind in "rs" for kind, _ in ops)
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
        buckets: dict[str, set[int]] = {k: set() for k in KEYS}
        for _, observed in sorted(self.history, key=lambda h: h[0]):
            for kind, key, value in observed:
                if kind == "r":
                    assert value == state[key], (
                        f"read of {key} saw {value}, serial replay has {state[key]}"
                    )
                elif kind == "a":
                    state[key].append(value)
                elif kind == "s":
                    assert value == sorted(buckets[key]), (
                        f"scan of bucket {key} saw {value}, serial replay has {buckets[key]}"
                    )
                elif kind == "i":
                    buckets[key].add(value)
                else:
                    smallest = min(buckets[key], default=None)
                    assert value == smallest, (
                        f"move from bucket {key} took {value}, serial replay has {smallest}"
                    )
                    if value is not None:
                        buckets[key].remove(value)
                        buckets[NEXT[key]].add(value)
        final = self.engine.run(
            lambda ctx: {d["key"]: d["items"] for d in ctx.db.query("lists").collect()}
        )
        assert final == state
        rows = self.engine.run(lambda ctx: ctx.db.query("rows").collect())
        assert {k: {r["tag"] for r in rows if r["bucket"] == k} for k in KEYS} == buckets
        self.engine.check()


TestListAppend = ListAppend.TestCase
TestListAppend.settings = settings(
    max_examples=15,
    stateful_step_count=6,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
