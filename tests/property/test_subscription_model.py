"""Stateful property test: subscriptions always show what a fresh query would.

Random mutations (inserts, patches that set or remove fields, replaces and
deletes of documents with mixed-type fields; several writes per mutation, some
from a second thread or two threads at once, some raising after they wrote)
run (through this handle or a second one on the folder) while other handles
drop, redefine or add indexes, and while subscriptions to random registered
queries are opened and closed, some during another thread's writes: index ranges
over one and two fields with eq/gt/gte/lt/lte, both orders, an optional filter,
``collect``/``take``/``first``/``unique``/streaming reads; ``db.get`` of ids
that exist, were deleted or were never committed; a table that does not exist
yet; nested ``ctx.run_query``; and sets of two queries.

The oracle is the engine itself: after every step each open subscription's
``.value`` (or error) must equal ``engine.query`` of the same function and
arguments now (mutations return only once subscriptions caught up), the
callbacks must have ended at that value without delivering one value twice
in a row, and a commit that provably writes no key inside a query's read set
must not re-run it: its written documents (in every state the mutation gave
them) lie outside the query's index range, or in another table, or are not
the ids it reads.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from engine import UNSET, Engine, QueryCtx, define_schema, define_table, query, v
from engine.encoding import encode
from engine.intervals import IntervalIndex
from engine.subscriptions import Subscription, SubscriptionSet
from engine.values import compare
from tests.property.test_query_model import FIELD_VALUES, INDEXES, PRESENT_VALUES, index_range
from tests.waiting import wait_until


def docs_schema(indexes: dict[str, list[str]]) -> Any:
    table = define_table({})
    for name, fields in indexes.items():
        table = table.index(name, fields)
    return define_schema({"docs": table}, schema_validation=False)


SCHEMA = docs_schema(INDEXES)
#: Schemas a second handle opens the folder with while subscriptions run: an
#: index dropped, redefined (its entries move to a new index number) or added.
#: ``by_y`` keeps ``y`` first, so the ranges of the queries stay valid.
SCHEMAS = {
    "initial": SCHEMA,
    "without_by_y": docs_schema({k: f for k, f in INDEXES.items() if k != "by_y"}),
    "by_y_redefined": docs_schema({**INDEXES, "by_y": ["y", "x"]}),
    "with_by_z": docs_schema({**INDEXES, "by_z": ["z"]}),
}
#: "docs" has the indexes; "later" is created by its first insert (queries may
#: read it before it exists).
TABLES = ["docs", "later"]
MAX_OPEN = 12

# -- the registered queries --------------------------------------------------------
#
# Arguments must be Convex values, so a field value that may be missing (UNSET)
# travels boxed: [] for missing, [value] for present.


def box(value: Any) -> list[Any]:
    return [] if value is UNSET else [value]


def unbox(boxed: list[Any]) -> Any:
    return boxed[0] if boxed else UNSET


@query(args={"spec": v.any()})
def range_query(ctx: QueryCtx, spec: dict[str, Any]) -> Any:
    q = ctx.db.query(spec["table"])
    index = spec["index"]
    if index is not None:
        eqs = [unbox(b) for b in spec["eqs"]]
        bound = spec["bound"]
        if bound is not None:
            bound = (bound[0], unbox(bound[1]), bound[2], unbox(bound[3]))
        q = q.with_index(index, index_range(INDEXES[index], eqs, bound))
    q = q.order(spec["order"])
    if spec["flt"] is not None:
        flt = unbox(spec["flt"])
        q = q.filter(lambda f: f.gte(f.field("y"), flt))
    mode, n = spec["mode"], spec["n"]
    if mode == "collect":
        return q.collect()
    if mode == "take":
        return q.take(n)
    if mode == "first":
        return q.first()
    if mode == "stream":  # the generator path (Transaction.scan), stopped early
        return list(itertools.islice(q, n))
    return q.unique()


@query(args={"ids": v.array(v.string())})
def get_query(ctx: QueryCtx, ids: list[str]) -> Any:
    return [ctx.db.get(i) for i in ids]


@query(args={"calls": v.any()})
def nested_query(ctx: QueryCtx, calls: list[Any]) -> Any:
    out = []
    for kind, args in calls:
        out.append(ctx.run_query(range_query if kind == "range" else get_query, args))
    return out


FUNCTIONS = {"range": range_query, "get": get_query, "nested": nested_query}

# -- which commits may touch a query's read set ---------------------------------------


@dataclass
class Written:
    """A document a mutation wrote, in every state it had (None: absent)."""

    table: str
    id: str
    states: list[dict[str, Any] | None] = field(default_factory=list)


def in_range(doc: dict[str, Any], spec: dict[str, Any]) -> bool:
    """True if ``doc`` lies inside the index range of ``spec`` (filters aside)."""
    fields = INDEXES[spec["index"]]
    eqs = spec["eqs"]
    for i, boxed in enumerate(eqs):
        if compare(doc.get(fields[i], UNSET), unbox(boxed)) != 0:
            return False
    if spec["bound"] is not None:
        lo_op, lo, hi_op, hi = spec["bound"]
        value = doc.get(fields[len(eqs)], UNSET)
        if lo_op == "gt" and not compare(value, unbox(lo)) > 0:
            return False
        if lo_op == "gte" and not compare(value, unbox(lo)) >= 0:
            return False
        if hi_op == "lt" and not compare(value, unbox(hi)) < 0:
            return False
        if hi_op == "lte" and not compare(value, unbox(hi)) <= 0:
            return False
    return True


def may_touch(kind: str, args: dict[str, Any], writes: list[Written], new_table: bool) -> bool:
    """False only if no key these writes logged can lie in the query's read set.

    A range query reads an interval of its index inside its range (plus the
    missing table's catalog key before "later" exists, which its first insert
    writes); a get reads its ids' ``by_id`` keys, or the next table number
    when the id's table does not exist (the id of an insert into "later" that
    rolled back before "later" existed), which creating a table writes; a
    nested query the union.
    """
    if kind == "nested":
        return any(may_touch(k, a, writes, new_table) for k, a in args["calls"])
    if kind == "get":
        return new_table or any(w.id in args["ids"] for w in writes)
    spec = args["spec"]
    for w in writes:
        if w.table != spec["table"]:
            continue
        if spec["index"] is None:
            return True
        if any(s is not None and in_range(s, spec) for s in w.states):
            return True
    return False


# -- strategies ----------------------------------------------------------------------


def normalize(index: str | None, eqs: list[Any], bound: Any) -> tuple[list[Any], Any]:
    if index is None:
        return [], None
    fields = INDEXES[index]
    eqs = eqs[: len(fields)]
    if bound is not None and (len(eqs) >= len(fields) or (not bound[0] and not bound[2])):
        bound = None
    return eqs, bound


@st.composite
def range_specs(draw: st.DrawFn) -> dict[str, Any]:
    table = draw(st.sampled_from(TABLES))
    index = draw(st.sampled_from([None, "by_x", "by_x_y", "by_y"])) if table == "docs" else None
    eqs = draw(st.lists(FIELD_VALUES, max_size=2))
    bound = draw(
        st.one_of(
            st.none(),
            st.tuples(
                st.sampled_from(["", "gt", "gte"]),
                FIELD_VALUES,
                st.sampled_from(["", "lt", "lte"]),
                FIELD_VALUES,
            ),
        )
    )
    eqs, bound = normalize(index, eqs, bound)
    flt = draw(st.one_of(st.none(), PRESENT_VALUES))
    return {
        "table": table,
        "index": index,
        "eqs": [box(e) for e in eqs],
        "bound": None if bound is None else [bound[0], box(bound[1]), bound[2], box(bound[3])],
        "order": draw(st.sampled_from(["asc", "desc"])),
        "flt": None if flt is None else box(flt),
        "mode": draw(st.sampled_from(["collect", "take", "first", "unique", "stream"])),
        "n": draw(st.integers(1, 3)),
    }


field_updates = st.dictionaries(st.sampled_from(["x", "y", "z"]), FIELD_VALUES, max_size=3)
new_fields = st.dictionaries(st.sampled_from(["x", "y", "z"]), PRESENT_VALUES, max_size=3)
#: One write of a mutation; targets are picked among the live documents when it runs.
write_ops: st.SearchStrategy[tuple[str, Any, dict[str, Any]]] = st.one_of(
    st.tuples(st.just("insert"), st.sampled_from(TABLES), new_fields),
    st.tuples(st.just("patch"), st.integers(0, 1 << 16), field_updates),
    st.tuples(st.just("replace"), st.integers(0, 1 << 16), new_fields),
    st.tuples(st.just("delete"), st.integers(0, 1 << 16), st.just({})),
)


class Boom(Exception):
    """Raised by a mutation after its writes: none of them may be seen."""


def outcome(thunk: Callable[[], Any]) -> tuple[Any, ...]:
    """A result as comparable bytes (-0.0 is not 0.0, 1 is not 1.0), or its error."""
    try:
        return ("value", encode(thunk()))
    except Exception as error:
        return ("error", type(error).__name__, str(error))


@dataclass
class Open:
    """An open subscription, what it follows, and what its callbacks received."""

    sub: Subscription
    kind: str
    args: dict[str, Any]
    events: list[tuple[Any, ...]]


class SubscriptionModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.folder = tempfile.mkdtemp()
        self.engine = Engine.open(self.folder, schema=SCHEMA, durability="none")
        self.engine._db.retry.retries = 200
        self.engine._db.retry.base = 0.0005
        self.live: dict[str, str] = {}  # id -> table, committed and not deleted
        self.seen: list[str] = []  # every id ever returned by an insert, committed or not
        self.open: list[Open] = []
        self.other: Engine | None = None  # a second handle, opened by its first write
        self.sets: list[tuple[SubscriptionSet, dict[str, tuple[str, dict[str, Any]]]]] = []
        # Count the worker's runs of each shared execution (by its key).
        self.runs: Counter[Any] = Counter()
        self.runs_lock = threading.Lock()
        manager = self.engine._db.subscriptions
        original = manager._run

        def counting(watched: Any, rtxn: Any) -> Any:
            with self.runs_lock:
                self.runs[watched.key] += 1
            return original(watched, rtxn)

        manager._run = counting  # type: ignore[method-assign]

    def teardown(self) -> None:
        try:
            for live_set, _ in self.sets:
                live_set.close()
            for entry in self.open:
                entry.sub.close()
        finally:
            if self.other is not None:
                self.other.close()
            self.engine.close()
            shutil.rmtree(self.folder, ignore_errors=True)

    # -- queries to follow -------------------------------------------------------

    def _ids(self, data: st.DataObject, max_size: int) -> list[str]:
        if not self.seen:
            return []
        return data.draw(st.lists(st.sampled_from(self.seen), min_size=1, max_size=max_size))

    def _call(self, data: st.DataObject, nested: bool = True) -> tuple[str, dict[str, Any]]:
        kinds = ["range", "range", "get"] + (["nested"] if nested else [])
        kind = data.draw(st.sampled_from(kinds))
        if kind == "get" and self.seen:
            return "get", {"ids": self._ids(data, 20)}
        if kind == "nested":
            calls = [self._call(data, nested=False) for _ in range(data.draw(st.integers(1, 3)))]
            return "nested", {"calls": [list(c) for c in calls]}
        return "range", {"spec": data.draw(range_specs())}

    def _subscribe(self, kind: str, args: dict[str, Any]) -> None:
        events: list[tuple[Any, ...]] = []
        sub = self.engine.subscribe(
            FUNCTIONS[kind],
            args,
            callback=lambda value: events.append(("value", encode(value))),
            on_error=lambda e: events.append(("error", type(e).__name__, str(e))),
        )
        self.open.append(Open(sub, kind, args, events))

    @precondition(lambda self: len(self.open) < MAX_OPEN)
    @rule(data=st.data())
    def subscribe(self, data: st.DataObject) -> None:
        for _ in range(data.draw(st.integers(1, 3))):
            self._subscribe(*self._call(data))

    @precondition(lambda self: self.open and len(self.open) < MAX_OPEN)
    @rule(data=st.data())
    def subscribe_again(self, data: st.DataObject) -> None:
        """Join a running execution (identical function and arguments)."""
        entry = data.draw(st.sampled_from(self.open))
        self._subscribe(entry.kind, entry.args)

    @precondition(lambda self: len(self.sets) < 2)
    @rule(data=st.data())
    def subscribe_set(self, data: st.DataObject) -> None:
        queries = {"a": self._call(data), "b": self._call(data)}
        live = self.engine.subscribe_set(
            {name: (FUNCTIONS[kind], args) for name, (kind, args) in queries.items()}
        )
        self.sets.append((live, queries))

    @precondition(lambda self: self.open)
    @rule(data=st.data())
    def close(self, data: st.DataObject) -> None:
        entry = self.open.pop(data.draw(st.integers(0, len(self.open) - 1)))
        entry.sub.close()
        assert entry.sub.closed

    @rule(data=st.data())
    def subscribe_and_drop(self, data: st.DataObject) -> None:
        """A handle without callback, dropped unclosed: let go, and its execution with it
        unless an open subscription shares it (see followed_are_the_open_ones)."""
        if self.open and data.draw(st.booleans()):
            entry = data.draw(st.sampled_from(self.open))
            kind, args = entry.kind, entry.args  # joins that execution
        else:
            kind, args = self._call(data)
        self.engine.subscribe(FUNCTIONS[kind], args)  # collected at once (reference counting)

    @precondition(lambda self: self.sets)
    @rule(data=st.data())
    def close_set(self, data: st.DataObject) -> None:
        live, _ = self.sets.pop(data.draw(st.integers(0, len(self.sets) - 1)))
        live.close()

    # -- writes ---------------------------------------------------------------------

    def _body(
        self, ops: list[Any], written: dict[str, Written], fail: bool
    ) -> Callable[[Any], list[str]]:
        """A mutation applying ``ops``; it records every state of what it wrote."""
        lock = threading.Lock()

        def note(ctx: Any, table: str, doc_id: str) -> None:
            with lock:
                entry = written.setdefault(doc_id, Written(table, doc_id))
                entry.states.append(ctx.db.get(doc_id))

        def body(ctx: Any) -> list[str]:
            # A retried attempt adds the states it saw: a superset is still safe.
            live = dict(self.live)
            inserted: list[str] = []
            for kind, arg, fields in ops:
                if kind == "insert":
                    doc_id = ctx.db.insert(arg, dict(fields))
                    inserted.append(doc_id)
                    live[doc_id] = arg
                    with lock:
                        written.setdefault(doc_id, Written(arg, doc_id)).states.append(None)
                    note(ctx, arg, doc_id)
                    continue
                if not live:
                    continue
                doc_id = sorted(live)[arg % len(live)]
                if ctx.db.get(doc_id) is None:  # deleted by the other thread's mutation
                    del live[doc_id]
                    continue
                note(ctx, live[doc_id], doc_id)
                if kind == "patch":
                    ctx.db.patch(doc_id, dict(fields))
                elif kind == "replace":
                    ctx.db.replace(doc_id, dict(fields))
                else:
                    ctx.db.delete(doc_id)
                note(ctx, live[doc_id], doc_id)
                if kind == "delete":
                    del live[doc_id]
            if fail:
                raise Boom
            return inserted

        return body

    def _in_thread(self, work: Callable[[], list[str]]) -> Callable[[], list[str]]:
        """Start ``work`` on a new thread; the returned join gives its result or raises."""
        outcome: dict[str, Any] = {}

        def target() -> None:
            try:
                outcome["result"] = work()
            except BaseException as error:
                outcome["error"] = error

        thread = threading.Thread(target=target)
        thread.start()

        def join() -> list[str]:
            thread.join(60)
            assert not thread.is_alive()
            if "error" in outcome:
                raise outcome["error"]
            return outcome["result"]  # type: ignore[no-any-return]

        return join

    def _run_in_thread(self, body: Callable[[Any], list[str]]) -> Callable[[], list[str]]:
        return self._in_thread(lambda: self.engine.run(body))

    @initialize(docs=st.lists(st.tuples(st.sampled_from(TABLES), new_fields), max_size=8))
    def some_documents(self, docs: list[Any]) -> None:
        ops = [("insert", table, fields) for table, fields in docs]
        if ops:
            self.seen.extend(self.engine.run(self._body(ops, {}, fail=False)))
            self._refresh()

    operations = st.lists(write_ops, min_size=1, max_size=4)

    @rule(ops=operations)
    def write(self, ops: list[Any]) -> None:
        self._mutate(ops, "here")

    @rule(ops=operations)
    def write_from_a_thread(self, ops: list[Any]) -> None:
        self._mutate(ops, "thread")

    @rule(ops=operations)
    def write_from_two_threads_at_once(self, ops: list[Any]) -> None:
        """Two mutations at once: they may conflict and retry, or commit as one group."""
        self._mutate(ops, "two_threads")

    @rule(ops=operations)
    def write_through_another_handle(self, ops: list[Any]) -> None:
        """A second Engine on the folder shares the subscriptions: it waits for them too."""
        self._mutate(ops, "other_handle")

    @rule(ops=operations)
    def write_then_raise(self, ops: list[Any]) -> None:
        self._mutate(ops, "fail")

    @rule(name=st.sampled_from(sorted(SCHEMAS)))
    def change_schema(self, name: str) -> None:
        """Another handle changes the indexes (a query of a dropped index raises)."""
        Engine.open(self.folder, schema=SCHEMAS[name], durability="none").close()
        # Opening with a schema is not a mutation: it does not wait for the
        # subscriptions to catch up (read-your-writes); an empty Engine.run does.
        self.engine.run(lambda ctx: None)

    @precondition(lambda self: len(self.open) < MAX_OPEN)
    @rule(batches=st.lists(operations, min_size=1, max_size=4), data=st.data())
    def subscribe_and_close_while_writing(
        self, batches: list[list[Any]], data: st.DataObject
    ) -> None:
        """Subscribe (new and joining) and close while another thread's mutations commit."""
        calls = [self._call(data) for _ in range(data.draw(st.integers(1, 3)))]
        closing = data.draw(st.integers(0, len(self.open))) if self.open else None

        def writes() -> list[str]:
            inserted: list[str] = []
            for ops in batches:
                inserted += self.engine.run(self._body(ops, {}, fail=False))
            return inserted

        join = self._in_thread(writes)
        for kind, args in calls:
            self._subscribe(kind, args)
        if closing is not None and closing < len(self.open):
            self.open.pop(closing).sub.close()
        self.seen.extend(join())
        self._refresh()

    def _mutate(self, ops: list[Any], mode: str) -> None:
        with self.runs_lock:
            self.runs.clear()
        written: dict[str, Written] = {}
        had_later = self._later_exists()
        # A query that raised for what the catalog says (its index was dropped) read the
        # next table number, which creating a table writes (Query._read_catalog).
        failing = {
            id(entry) for entry in self.open if "error" in outcome(lambda e=entry: e.sub.value)
        }
        if mode == "fail":
            before = self.engine.query(get_query, {"ids": sorted(self.live)})
            with pytest.raises(Boom):
                self.engine.run(self._body(ops, written, fail=True))
            assert self.engine.query(get_query, {"ids": sorted(self.live)}) == before
            # Ids of inserts that never committed: a get of one stays None.
            self.seen.extend(w.id for w in written.values() if w.states[0] is None)
            with self.runs_lock:
                assert not self.runs, "a mutation that raised re-ran subscriptions"
            return
        if mode == "here":
            inserted = self.engine.run(self._body(ops, written, fail=False))
        elif mode == "other_handle":
            if self.other is None:
                self.other = Engine.open(self.folder, durability="none")
            inserted = self.other.run(self._body(ops, written, fail=False))
        elif mode == "thread":
            inserted = self._run_in_thread(self._body(ops, written, fail=False))()
        else:
            half = len(ops) // 2
            joins = [
                self._run_in_thread(self._body(part, written, fail=False))
                for part in (ops[:half], ops[half:])
            ]
            inserted = [doc_id for join in joins for doc_id in join()]
        self.seen.extend(inserted)
        self._refresh()
        # A query whose read set no written key can fall in must not have re-run.
        writes = list(written.values())
        new_table = not had_later and self._later_exists()
        with self.runs_lock:
            runs = dict(self.runs)
        for entry in self.open:
            touched = may_touch(entry.kind, entry.args, writes, new_table)
            if not entry.sub.closed and not touched and not (new_table and id(entry) in failing):
                assert runs.get(entry.sub._watched.key, 0) == 0, (
                    f"{entry.kind} {entry.args} re-ran after unrelated writes {writes}"
                )

    def _later_exists(self) -> bool:
        exists, _ = self.engine._db.run(lambda txn: txn.table("later") is not None, writable=False)
        return bool(exists)

    def _refresh(self) -> None:
        self.live = {}
        for table in TABLES:
            spec: dict[str, Any] = {
                "table": table,
                "index": None,
                "eqs": [],
                "bound": None,
                "order": "asc",
                "flt": None,
                "mode": "collect",
                "n": 1,
            }
            for doc in self.engine.query(range_query, {"spec": spec}):
                self.live[doc["_id"]] = table

    # -- the invariant ------------------------------------------------------------------

    @invariant()
    def followed_are_the_open_ones(self) -> None:
        """The executions followed are those of the open handles: the dropped ones are
        let go (by the worker, within a poll), the closed ones at once."""
        manager = self.engine._db.subscriptions
        keys = {entry.sub._watched.key for entry in self.open}
        keys |= {sub._watched.key for live, _ in self.sets for sub in live._members.values()}
        with manager._lock:  # the worker reaps at its next poll: now, not in 20 ms
            manager._lock.notify_all()
        wait_until(lambda: manager.active == len(keys), 5.0, lambda: (manager.active, keys))

    @invariant()
    def subscriptions_match_fresh_queries(self) -> None:
        for entry in self.open:
            expected = outcome(lambda: self.engine.query(FUNCTIONS[entry.kind], entry.args))
            assert outcome(lambda: entry.sub.value) == expected, (entry.kind, entry.args)
            assert entry.sub.ts <= self.engine._db.subscriptions.ts
            # The callbacks end at the same value (they run on the worker, which may
            # still be delivering after the mutation returned), never twice in a row.
            deadline = time.monotonic() + 10
            while (not entry.events or entry.events[-1] != expected) and (
                time.monotonic() < deadline
            ):
                time.sleep(0.001)
            events = list(entry.events)
            assert events and events[-1] == expected, (entry.kind, entry.args, events)
            assert all(a != b for a, b in itertools.pairwise(events)), events
        for live, queries in self.sets:

            def fresh(queries: dict[str, tuple[str, dict[str, Any]]] = queries) -> Any:
                return {
                    name: self.engine.query(FUNCTIONS[kind], args)
                    for name, (kind, args) in queries.items()
                }

            assert outcome(lambda: live.value) == outcome(fresh), queries


BOUNDED = settings(
    max_examples=80,
    stateful_step_count=30,
    deadline=None,
    # Rules with preconditions (something open to close) are sometimes
    # discarded; with some seeds that trips filter_too_much.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

TestSubscriptionModel = SubscriptionModel.TestCase
TestSubscriptionModel.settings = BOUNDED


@pytest.mark.slow
def test_subscription_model_long() -> None:
    run_state_machine_as_test(
        SubscriptionModel,
        settings=settings(BOUNDED, max_examples=600, stateful_step_count=60),
    )


# -- the interval index on its own --------------------------------------------------
#
# The worker finds the subscriptions a commit touched by stabbing this index; its
# static part (a max-hi tree) is only built past 64 intervals, which the machine
# above rarely reaches: here it is compared with a plain dict, rebuilt at will.

index_keys = st.binary(max_size=3).map(lambda b: bytes(c % 4 for c in b))
index_intervals = st.lists(st.tuples(index_keys, index_keys).map(sorted).map(tuple), max_size=80)


class IntervalIndexModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.index = IntervalIndex()
        self.model: dict[int, list[tuple[bytes, bytes]]] = {}

    @rule(owner=st.integers(0, 12), intervals=index_intervals)
    def add(self, owner: int, intervals: list[tuple[bytes, bytes]]) -> None:
        self.index.add(owner, intervals)
        self.model[owner] = intervals

    @rule(owner=st.integers(0, 12), intervals=st.lists(index_intervals, min_size=1, max_size=3))
    def add_many(self, owner: int, intervals: list[list[tuple[bytes, bytes]]]) -> None:
        """Past 64 intervals added, the index rebuilds its static part."""
        for i, pairs in enumerate(intervals):
            self.add(owner + i, pairs)

    @rule()
    def rebuild(self) -> None:
        """Move everything into the static part now (else only past 64 intervals)."""
        self.index._rebuild()

    @rule(owner=st.integers(0, 12))
    def remove(self, owner: int) -> None:
        self.index.remove(owner)
        self.model.pop(owner, None)

    @rule(keys=st.lists(index_keys, max_size=4))
    def stab(self, keys: list[bytes]) -> None:
        expected = {
            owner
            for owner, pairs in self.model.items()
            if any(lo <= key < hi for lo, hi in pairs for key in keys)
        }
        assert self.index.stab(keys) == expected

    @invariant()
    def same_owners(self) -> None:
        assert len(self.index) == len(self.model)
        assert all(owner in self.index for owner in self.model)


TestIntervalIndexModel = IntervalIndexModel.TestCase
TestIntervalIndexModel.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
