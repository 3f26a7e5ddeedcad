"""Read sets are exact: a commit conflicts with a reader exactly when it wrote inside
what the reader consumed.

Two transactions interleave. A (a mutation, which streams and merges its own writes, or
a read-only query, which reads in one loop) writes a few documents of its own, then runs
one query over a compound index with mixed-type values, or over ``by_id`` or
``by_creation_time`` with bounds at and between ids (any range of Convex's grammar,
either order, a filter that rejects rows, ``collect``/``take``/``first``/``unique``/
``paginate``, a page from a cursor issued before). Then B commits one write (an insert,
a patch, a delete) and A tries to commit.

Checked against a plain-Python model of the index (Convex's total order, then
``_creationTime`` and ``_id``):

- A's result is the model's (rows and order, at type boundaries, -0.0, NaN);
- soundness: if A's query in the serial order B then A (the model, on what B committed
  and A's own writes) returns something else, A conflicts (a read-set hole would let A
  commit on a stale read);
- exactness: A conflicts if and only if a version of the document B wrote (before or
  after) lies in the part of the range A consumed (up to the row its limit stopped at,
  or all of it), or B wrote a document A read by id: an over-wide read set costs
  retries, a narrow one is a hole.
"""

from __future__ import annotations

import functools
import math
import shutil
import tempfile
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from engine import UNSET, Engine, define_schema, define_table
from engine.contexts import MutationCtx, QueryCtx
from engine.transaction import Transaction
from engine.values import compare
from tests.property.interleaving import ends_in_conflict, run_terminal

SCHEMA = define_schema(
    {"d": define_table({}).index("by_ab", ["a", "b"]), "out": define_table({})},
    schema_validation=False,
)
# Each type of Convex's order, and its boundaries: missing < null < int < float < bool
# < str < bytes < array < object; -0.0 < 0.0; NaN after every other float.
VALUES: list[Any] = [
    UNSET, None, -1, 0, 1, -math.inf, -0.0, 0.0, 1.5, math.nan, False, True,
    "", "a", "a\x00", b"", b"\x00", [], [0], [0, 0], {}, {"a": 0},
    # Index keys past LMDB's 511 bytes, kept apart (engine.longkeys); one of 511 bytes.
    "L" * 480, "L" * 600, "L" * 600 + "a",
]  # fmt: skip
values = st.sampled_from(VALUES)
rows = st.tuples(values, values, st.integers(0, 2))  # (a, b, c); c for the filter
LOWER = ("gt", "gte")
UPPER = ("lt", "lte")


@st.composite
def ranges(draw: st.DrawFn) -> list[tuple[str, str, Any]]:
    """A range of Convex's grammar over ``["a", "b"]``."""
    shape = draw(st.sampled_from(["none", "a", "ab", "a+b", "bounds a"]))
    ops: list[tuple[str, str, Any]] = []
    if shape in ("a", "ab", "a+b"):
        ops.append(("eq", "a", draw(values)))
    if shape == "ab":
        ops.append(("eq", "b", draw(values)))
    if shape in ("a+b", "bounds a"):
        field = "b" if shape == "a+b" else "a"
        if draw(st.booleans()):
            ops.append((draw(st.sampled_from(LOWER)), field, draw(values)))
        if draw(st.booleans()):
            ops.append((draw(st.sampled_from(UPPER)), field, draw(values)))
    return ops


# A range on a system index: (op, field, the position of the initial document whose
# field it compares with, an edit of an _id: as is, cut short, lengthened).
system_ranges = st.one_of(
    st.tuples(
        st.just("by_id"),
        st.lists(
            st.tuples(
                st.sampled_from(["eq", *LOWER, *UPPER]),
                st.just("_id"),
                st.integers(0, 8),
                st.sampled_from(["", "cut", "longer"]),
            ),
            max_size=2,
        ),
    ),
    st.tuples(
        st.just("by_creation_time"),
        st.lists(
            st.tuples(
                st.sampled_from(["eq", *LOWER, *UPPER]),
                st.sampled_from(["_creationTime", "_id"]),
                st.integers(0, 8),
                st.sampled_from(["", "cut", "longer"]),
            ),
            max_size=3,
        ),
    ),
)


def system_ops(index: str, spec: Any, docs: list[dict[str, Any]]) -> list[Any] | None:
    """``spec``'s range over ``docs``, or None where it breaks the grammar."""
    ops = []
    for op, field, position, edit in spec:
        if not docs:
            return None
        value = docs[position % len(docs)][field]
        if field == "_id":
            value = {"": value, "cut": value[:-1], "longer": value + "0"}[edit]
        ops.append((op, field, value))
    fields = {"by_id": ["_id"], "by_creation_time": ["_creationTime", "_id"]}[index]
    eqs = [f for op, f, _ in ops if op == "eq"]
    bounds = [f for op, f, _ in ops if op != "eq"]
    lowers = [op for op, _, _ in ops if op in LOWER]
    uppers = [op for op, _, _ in ops if op in UPPER]
    if len(set(bounds)) > 1 or len(lowers) > 1 or len(uppers) > 1 or len(set(eqs)) < len(eqs):
        return None
    used = eqs + bounds[:1]
    if set(eqs) & set(bounds) or used != fields[: len(used)]:
        return None
    return ops


plans = st.fixed_dictionaries(
    {
        "index": st.sampled_from(["by_ab", "by_ab", "system"]),
        "system": system_ranges,
        "ops": ranges(),
        "order": st.sampled_from(["asc", "desc"]),
        "filter": st.booleans(),  # keeps rows with c != 0
        "terminal": st.sampled_from(["collect", "take", "first", "unique", "page", "cursor"]),
        "n": st.integers(0, 4),
        "max_rows": st.none() | st.integers(1, 3),
        "writable": st.booleans(),
    }
)
# A's own writes before its query (a mutation only): insert a row, patch or delete the
# document at a position of the initial ones.
own_writes = st.lists(
    st.one_of(
        st.tuples(st.just("insert"), rows),
        st.tuples(st.just("patch"), st.integers(0, 20), rows),
        st.tuples(st.just("delete"), st.integers(0, 20)),
    ),
    max_size=3,
)
other_write = st.one_of(
    st.tuples(st.just("insert"), rows),
    st.tuples(st.just("patch"), st.integers(0, 20), rows),
    st.tuples(st.just("delete"), st.integers(0, 20)),
)

_K = functools.cmp_to_key(compare)


def position(doc: dict[str, Any], index: str = "by_ab") -> tuple[Any, ...]:
    """A document's position in ``index``: ``by_ab`` orders by ``a``, ``b``, then as
    ``by_creation_time`` by ``_creationTime`` and ``_id``; ``by_id`` by ``_id``."""
    if index == "by_id":
        return (doc["_id"],)
    if index == "by_creation_time":
        return (doc["_creationTime"], doc["_id"])
    return (_K(doc.get("a", UNSET)), _K(doc.get("b", UNSET)), doc["_creationTime"], doc["_id"])


def in_range(doc: dict[str, Any], ops: list[tuple[str, str, Any]]) -> bool:
    for op, field, value in ops:
        c = compare(doc.get(field, UNSET), value)
        if not {"eq": c == 0, "gt": c > 0, "gte": c >= 0, "lt": c < 0, "lte": c <= 0}[op]:
            return False
    return True


def document(row: tuple[Any, Any, int]) -> dict[str, Any]:
    a, b, c = row
    return {k: v for k, v in (("a", a), ("b", b), ("c", c)) if v is not UNSET}


def build(db: Any, plan: dict[str, Any]) -> Any:
    def index_range(r: Any) -> Any:
        for op, field, value in plan["ops"]:
            r = getattr(r, op)(field, value)
        return r

    q = db.query("d").with_index(plan["index"], index_range)
    q = q.order(plan["order"])
    if plan["filter"]:
        q = q.filter(lambda f: f.neq(f.field("c"), 0))
    return q


def run_query(db: Any, plan: dict[str, Any], cursor: str | None) -> Any:
    """The plan's terminal on a fresh query: a list of documents, a page, or an error."""
    q = build(db, plan)
    opts: dict[str, Any] = {"numItems": max(plan["n"], 1), "cursor": cursor}
    if plan["max_rows"] is not None:
        opts["maximumRowsRead"] = plan["max_rows"]
    return run_terminal(q, plan["terminal"], plan["n"], opts)


class Run:
    """One interleaving, on a fresh engine."""

    def __init__(self, engine: Engine, initial: list[tuple[Any, Any, int]]) -> None:
        self.engine = engine
        self.db = engine._db

        def setup(ctx: Any) -> list[str]:
            ctx.db.insert("out", {})
            return [ctx.db.insert("d", document(row)) for row in initial]

        self.ids = engine.run(setup)

    def committed(self) -> dict[str, dict[str, Any]]:
        return {d["_id"]: d for d in self.engine.run(lambda ctx: ctx.db.query("d").collect())}

    def apply_own(
        self, db: Any, writes: list[Any], docs: dict[str, dict[str, Any]]
    ) -> tuple[dict[str, str], set[str]]:
        """A's writes through ``db``, mirrored in ``docs``; returns its inserts' ids (to
        their names) and the ids it read by id (patched, deleted)."""
        own: dict[str, str] = {}
        touched: set[str] = set()
        gone: set[str] = set()  # deleted by A itself
        for write in writes:
            if write[0] == "insert":
                new_id = db.insert("d", document(write[1]))
                own[new_id] = f"own{len(own)}"
                docs[new_id] = db.get(new_id)
            elif self.ids:
                target = self.ids[write[1] % len(self.ids)]
                touched.add(target)
                if target in gone:
                    continue  # deleted already by A: the write would fail
                if write[0] == "patch":
                    a, b, c = write[2]
                    db.patch(target, {"a": a, "b": b, "c": c})
                    docs[target] = db.get(target)
                else:
                    db.delete(target)
                    gone.add(target)
                    docs.pop(target, None)
        return own, touched


def consumed(
    docs: dict[str, dict[str, Any]], plan: dict[str, Any], after: tuple[Any, ...] | None
) -> tuple[list[dict[str, Any]], Any, Any]:
    """The model: the documents the query returns, a test of whether a document version
    lies in what it consumed, and the row it stopped at (None: it read the range)."""
    ops, reverse = plan["ops"], plan["order"] == "desc"
    index = plan["index"]

    def model_key(doc: dict[str, Any]) -> tuple[Any, ...]:
        return position(doc, index)

    terminal, n = plan["terminal"], plan["n"]
    candidates = sorted(
        (d for d in docs.values() if in_range(d, ops)), key=model_key, reverse=reverse
    )
    if after is not None:  # a page after a cursor
        candidates = [
            d for d in candidates if (model_key(d) < after if reverse else model_key(d) > after)
        ]
    limit = {"collect": None, "take": n, "first": 1, "unique": 2}.get(terminal, max(n, 1))
    max_rows = plan["max_rows"] if terminal in ("page", "cursor") else None
    out: list[dict[str, Any]] = []
    stop: tuple[Any, ...] | None = None
    if limit == 0:
        return out, lambda doc: False, None
    for scanned, d in enumerate(candidates, 1):
        if not plan["filter"] or d["c"] != 0:
            out.append(d)
        if (limit is not None and len(out) >= limit) or scanned == max_rows:
            stop = model_key(d)
            break

    def inside(doc: dict[str, Any]) -> bool:
        if not in_range(doc, ops):
            return False
        key = model_key(doc)
        if after is not None and not (key < after if reverse else key > after):
            return False
        return stop is None or (key >= stop if reverse else key <= stop)

    return out, inside, stop


def outcome(docs: dict[str, dict[str, Any]], plan: dict[str, Any], after: Any) -> Any:
    """What the query's caller sees in the model: the rows (or unique()'s error) and
    where a page stops (its continueCursor)."""
    out, _, stop = consumed(docs, plan, after)
    if plan["terminal"] == "unique" and len(out) > 1:
        return "unique() error"
    rows = [(d["_id"], repr(sorted(d.items()))) for d in out]
    return rows, stop if plan["terminal"] in ("page", "cursor") else None


@settings(max_examples=400, deadline=None)
@given(
    initial=st.lists(rows, max_size=8),
    plan=plans,
    mine=own_writes,
    theirs=other_write,
)
def test_a_commit_conflicts_exactly_when_it_wrote_inside_what_was_read(
    initial: list[Any], plan: dict[str, Any], mine: list[Any], theirs: Any
) -> None:
    folder = tempfile.mkdtemp()
    try:
        with Engine.open(folder, schema=SCHEMA, durability="none") as engine:
            check(Run(engine, initial), plan, mine if plan["writable"] else [], theirs)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def check(run: Run, plan: dict[str, Any], mine: list[Any], theirs: Any) -> None:
    txns: list[Transaction] = []
    try:
        interleave(run, plan, mine, theirs, txns)
    finally:
        for txn in txns:  # closed on every way out: Engine.close waits for open ones
            txn.close()


def interleave(
    run: Run, plan: dict[str, Any], mine: list[Any], theirs: Any, txns: list[Transaction]
) -> None:
    db = run.db
    base = run.committed()
    if plan["index"] == "system":
        index, spec = plan["system"]
        ops = system_ops(index, spec, [base[i] for i in run.ids])
        if ops is None:
            return
        plan = {**plan, "index": index, "ops": ops}
    cursor: str | None = None
    after: tuple[Any, ...] | None = None
    if plan["terminal"] == "cursor":
        # A cursor issued by a first page before any of the writes below, reused.
        first = {**plan, "terminal": "page", "max_rows": None}
        page = run.engine.query(lambda ctx: run_query(ctx.db, first, None))
        if page["isDone"]:
            return  # its cursor is the End: no range left to read
        cursor = page["continueCursor"]
        after = position(page["page"][-1], plan["index"])

    # A: its own writes, then the query; it is kept open while B commits.
    writable = plan["writable"]
    txn = Transaction(db, writable)
    txns.append(txn)
    ctx = (MutationCtx if writable else QueryCtx)(None, txn, None, 0.0)
    view = dict(base)
    own, touched = run.apply_own(ctx.db, mine, view)
    result = run_query(ctx.db, plan, cursor)
    expected, inside, _ = consumed(view, plan, after)
    if plan["terminal"] == "unique" and len(expected) > 1:
        assert result == ("error", "ValidationError")
    else:
        got = result["page"] if isinstance(result, dict) else result
        assert [d["_id"] for d in got] == [d["_id"] for d in expected]
    seen = outcome(view, plan, after)
    reads = txn.reads.freeze()
    if writable:
        ctx.db.insert("out", {})  # a write of its own, so that it commits

    # B: one write, committed while A is open.
    allowed = False
    if theirs[0] == "insert":
        new_id = run.engine.run(lambda c: c.db.insert("d", document(theirs[1])))
        allowed = inside(run.engine.run(lambda c: c.db.get(new_id)))
    elif run.ids:
        target = run.ids[theirs[1] % len(run.ids)]
        old = base.get(target)
        if old is None:
            return  # nothing to write
        if theirs[0] == "patch":
            a, b, c = theirs[2]
            run.engine.run(lambda x: x.db.patch(target, {"a": a, "b": b, "c": c}))
        else:
            run.engine.run(lambda x: x.db.delete(target))
        new = run.committed().get(target)
        changed = new is None or repr(sorted(new.items())) != repr(sorted(old.items()))
        allowed = changed and (
            inside(old) or (new is not None and inside(new)) or target in touched
        )
    else:
        return

    # A's query in the serial order B then A: on what B committed, with A's own writes
    # (A read by id what it patched or deleted: if B wrote one of those, A must conflict).
    view_after = run.committed()
    for doc_id, doc in view.items():
        if doc_id in own or doc_id in touched:
            view_after[doc_id] = doc
    for doc_id in touched - view.keys():
        view_after.pop(doc_id, None)
    rerun = outcome(view_after, plan, after)
    stale_by_id = theirs[0] != "insert" and allowed and target in touched

    # Does A conflict? A mutation asks the committer; a query's read set is tested
    # against the log as the committer (and a subscription) would.
    conflict = ends_in_conflict(db, txn, reads, writable)

    # Soundness: if it sees something else now, A conflicts.
    if rerun != seen or stale_by_id:
        assert conflict, f"stale read committed: saw {seen}, now {rerun}"
    assert conflict == allowed, (conflict, allowed, seen, rerun)
