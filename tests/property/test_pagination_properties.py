"""Pagination properties: complete walks, concurrent edits, end cursors, cursor fuzzing."""

from __future__ import annotations

import base64
import math
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from engine import UNSET, Engine, InvalidCursor, define_schema, define_table, v
from engine.ordering import compare

SCHEMA = define_schema(
    {"items": define_table({"g": v.int64(), "n": v.int64()}).index("by_g", ["g"])},
    schema_validation=False,
)


@contextmanager
def database(values: list[int]) -> Iterator[Engine]:
    folder = tempfile.mkdtemp()
    try:
        with Engine.open(folder, schema=SCHEMA, durability="none") as engine:
            if values:
                engine.run(
                    lambda ctx: [ctx.db.insert("items", {"g": g % 4, "n": g}) for g in values]
                )
            yield engine
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def build(ctx: Any, order: str, use_index: bool, use_filter: bool) -> Any:
    """The query every test pages through: optional index range, order, optional filter."""
    q = ctx.db.query("items")
    if use_index:
        q = q.with_index("by_g", lambda r: r.gte("g", 1))
    q = q.order(order)
    if use_filter:
        q = q.filter(lambda f: f.neq(f.mod(f.field("n"), 3), 0))
    return q


def run_page(
    engine: Engine, opts: dict[str, Any], order: str, use_index: bool, use_filter: bool
) -> dict[str, Any]:
    return engine.run(lambda ctx: build(ctx, order, use_index, use_filter).paginate(opts))


def collect(engine: Engine, order: str, use_index: bool, use_filter: bool) -> list[str]:
    return engine.run(
        lambda ctx: [d["_id"] for d in build(ctx, order, use_index, use_filter).collect()]
    )


shapes = st.tuples(st.sampled_from(["asc", "desc"]), st.booleans(), st.booleans())


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(st.integers(0, 50), max_size=40),
    sizes=st.lists(st.integers(1, 7), min_size=1),
    shape=shapes,
)
def test_walking_all_pages_equals_collect(
    values: list[int], sizes: list[int], shape: tuple[str, bool, bool]
) -> None:
    with database(values) as engine:
        seen: list[str] = []
        cursor = None
        for step in range(1000):
            page = run_page(
                engine, {"numItems": sizes[step % len(sizes)], "cursor": cursor}, *shape
            )
            seen += [d["_id"] for d in page["page"]]
            if page["isDone"]:
                break
            cursor = page["continueCursor"]
        assert seen == collect(engine, *shape)


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(st.integers(0, 50), min_size=1, max_size=30),
    edits=st.lists(st.tuples(st.booleans(), st.integers(0, 50)), max_size=20),
    size=st.integers(1, 5),
    shape=shapes,
)
def test_concurrent_edits_never_skip_or_repeat(
    values: list[int], edits: list[tuple[bool, int]], size: int, shape: tuple[str, bool, bool]
) -> None:
    with database(values) as engine:
        initial = set(collect(engine, *shape))
        removed: set[str] = set()
        seen: list[str] = []
        cursor = None
        edit_iter = iter(edits)
        for _ in range(1000):
            page = run_page(engine, {"numItems": size, "cursor": cursor}, *shape)
            seen += [d["_id"] for d in page["page"]]
            if page["isDone"]:
                break
            cursor = page["continueCursor"]
            edit = next(edit_iter, None)
            if edit is not None:
                insert, value = edit
                if insert:
                    engine.run(lambda ctx, g=value: ctx.db.insert("items", {"g": g % 4, "n": g}))
                else:
                    current = collect(engine, *shape)
                    if current:
                        victim = current[value % len(current)]
                        engine.run(lambda ctx, d=victim: ctx.db.delete(d))
                        removed.add(victim)
        assert len(seen) == len(set(seen)), "a document was returned twice"
        assert initial - removed <= set(seen), "a document present throughout was skipped"


@settings(max_examples=30, deadline=None)
@given(
    values=st.lists(st.integers(0, 50), min_size=1, max_size=30),
    edits=st.lists(st.tuples(st.booleans(), st.integers(0, 50)), max_size=10),
    size=st.integers(1, 5),
    shape=shapes,
)
def test_end_cursor_reruns_tile_the_range(
    values: list[int], edits: list[tuple[bool, int]], size: int, shape: tuple[str, bool, bool]
) -> None:
    with database(values) as engine:
        bounds: list[tuple[Any, str]] = []
        cursor = None
        for _ in range(len(values) + 2):  # every page but the last holds a row
            page = run_page(engine, {"numItems": size, "cursor": cursor}, *shape)
            bounds.append((cursor, page["continueCursor"]))
            if page["isDone"]:
                break
            cursor = page["continueCursor"]
        else:
            raise AssertionError("the walk never ended: a cursor repeats rows or moves back")
        for insert, value in edits:
            if insert:
                engine.run(lambda ctx, g=value: ctx.db.insert("items", {"g": g % 4, "n": g}))
            else:
                current = collect(engine, "asc", False, False)
                if current:
                    victim = current[value % len(current)]
                    engine.run(lambda ctx, d=victim: ctx.db.delete(d))
            union: list[str] = []
            for start, end in bounds:
                page = run_page(
                    engine, {"numItems": size, "cursor": start, "endCursor": end}, *shape
                )
                union += [d["_id"] for d in page["page"]]
            assert union == collect(engine, *shape)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), shape=shapes, other=shapes)
def test_fuzzed_cursors_only_raise_invalid_cursor(
    data: st.DataObject, shape: tuple[str, bool, bool], other: tuple[str, bool, bool]
) -> None:
    with database(list(range(12))) as engine:
        cursor = run_page(engine, {"numItems": 3, "cursor": None}, *shape)["continueCursor"]
        raw = bytearray(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        choice = data.draw(st.sampled_from(["flip", "truncate", "random", "other-query", "extend"]))
        if choice == "flip":
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] ^= data.draw(st.integers(1, 255))
            bad = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
        elif choice == "truncate":
            bad = cursor[: data.draw(st.integers(0, len(cursor) - 1))]
        elif choice == "extend":
            bad = cursor + data.draw(st.text("ABCxyz0123-_", min_size=1, max_size=4))
        elif choice == "random":
            bad = data.draw(st.text(max_size=60))
        else:
            if other == shape:
                return
            bad = cursor
            shape = other
        try:
            run_page(engine, {"numItems": 3, "cursor": bad}, *shape)
        except InvalidCursor:
            return
        # A random string may decode to nothing valid only if it equals the real cursor.
        assert bad == cursor


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.integers(0, 50), max_size=40),
    size=st.integers(1, 8),
    max_rows=st.none() | st.integers(1, 10),
    max_bytes=st.none() | st.integers(1, 400),
    use_end=st.booleans(),
    shape=shapes,
)
def test_queries_and_mutations_page_alike(
    values: list[int],
    size: int,
    max_rows: int | None,
    max_bytes: int | None,
    use_end: bool,
    shape: tuple[str, bool, bool],
) -> None:
    """A query reads a page in one loop, a mutation streams it: same pages, same cursors."""
    with database(values) as engine:
        cursor = None
        for _ in range(100):
            opts: dict[str, Any] = {"numItems": size, "cursor": cursor}
            if max_rows is not None:
                opts["maximumRowsRead"] = max_rows
            if max_bytes is not None:
                opts["maximumBytesRead"] = max_bytes
            if use_end and cursor is not None:
                ahead = run_page(engine, {"numItems": size + 2, "cursor": cursor}, *shape)
                opts["endCursor"] = ahead["continueCursor"]
            in_query, query_reads = paginate_with_reads(engine, opts, shape, writable=False)
            in_mutation, mutation_reads = paginate_with_reads(engine, opts, shape, writable=True)
            assert in_query == in_mutation
            assert query_reads == mutation_reads  # the same interval recorded as read
            if in_query["isDone"]:
                break
            cursor = in_query["continueCursor"]


def paginate_with_reads(
    engine: Engine, opts: dict[str, Any], shape: tuple[str, bool, bool], *, writable: bool
) -> tuple[dict[str, Any], list[tuple[bytes, bytes]]]:
    """One page in a query (``writable=False``) or a mutation, and the read set it left."""
    from engine.contexts import MutationCtx, QueryCtx

    def body(txn: Any) -> tuple[dict[str, Any], list[tuple[bytes, bytes]]]:
        ctx = (MutationCtx if writable else QueryCtx)(None, txn, None, 0.0)
        page = build(ctx, *shape).paginate(opts)
        return page, txn.reads.freeze().pairs()

    return engine._db.run(body, writable=writable)[0]


# Mixed values: every type of Convex's order, UNSET (a missing field), -0.0 beside 0.0,
# NaN, and strings and bytes past LMDB's key size (entries sharing a 511-byte prefix).
MIXED_SCHEMA = define_schema(
    {"t": define_table({"a": v.any(), "k": v.boolean()}).index("by_a", ["a"])},
    schema_validation=False,
)
_scalars = st.one_of(
    st.just(UNSET),
    st.none(),
    st.integers(-3, 3),
    st.sampled_from([0.0, -0.0, math.nan, math.inf, -1.5, 2.0]),
    st.booleans(),
    st.sampled_from(["", "a", "a" * 600, "a" * 600 + "b", "a" * 2000]),
    st.sampled_from([b"", b"x" * 700, b"x" * 700 + b"\x00"]),
)
mixed = st.one_of(_scalars, st.lists(_scalars.filter(lambda x: x is not UNSET), max_size=2))
mixed_edits = st.lists(
    st.tuples(st.sampled_from(["insert", "delete", "move", "flip"]), mixed, st.integers(0, 99)),
    max_size=10,
)


def _mixed_doc(a: Any, k: bool) -> dict[str, Any]:
    return {"k": k} if a is UNSET else {"a": a, "k": k}


@settings(max_examples=60, deadline=None)
@given(
    initial=st.lists(st.tuples(mixed, st.booleans()), max_size=14),
    edits=mixed_edits,
    size=st.integers(1, 4),
    shape=shapes,
)
def test_pages_of_mixed_values_follow_a_model_through_edits(
    initial: list[tuple[Any, bool]],
    edits: list[tuple[str, Any, int]],
    size: int,
    shape: tuple[str, bool, bool],
) -> None:
    """Each page is the model's next ``size`` rows after the last row returned, in
    Convex's order (engine.ordering.compare, not the byte keys), while rows are
    inserted, deleted, moved across the cursor (a new indexed value) or filtered in
    and out between pages; then end-cursor re-runs of the pages tile ``collect()``."""
    order, use_index, use_filter = shape

    def build_mixed(ctx: Any) -> Any:
        q = ctx.db.query("t")
        q = (q.with_index("by_a") if use_index else q).order(order)
        return q.filter(lambda f: f.eq(f.field("k"), True)) if use_filter else q

    def position(d: dict[str, Any]) -> Any:
        first = d.get("a", UNSET) if use_index else 0
        return (_Sorted(first), d["_creationTime"], d["_id"])

    folder = tempfile.mkdtemp()
    try:
        with Engine.open(folder, schema=MIXED_SCHEMA, durability="none") as engine:
            engine.run(lambda ctx: [ctx.db.insert("t", _mixed_doc(a, k)) for a, k in initial])
            cursor, after, bounds = None, None, []
            pending = iter(edits)
            for _ in range(200):
                rows = sorted(
                    engine.run(lambda ctx: ctx.db.query("t").collect()),
                    key=position,
                    reverse=order == "desc",
                )
                if after is not None:
                    rows = [d for d in rows if (position(d) > after) == (order == "asc")]
                    rows = [d for d in rows if position(d) != after]
                rows = [d for d in rows if d["k"]] if use_filter else rows
                result = engine.run(
                    lambda ctx: build_mixed(ctx).paginate({"numItems": size, "cursor": cursor})
                )
                assert [d["_id"] for d in result["page"]] == [d["_id"] for d in rows[:size]]
                assert result["isDone"] == (len(rows) < size)
                bounds.append((cursor, result["continueCursor"]))
                if result["isDone"]:
                    break
                cursor, after = result["continueCursor"], position(rows[size - 1])
                edit = next(pending, None)
                if edit is not None:
                    _apply_mixed_edit(engine, *edit)
            union: list[str] = []
            for start, end in bounds:
                opts = {"numItems": size, "cursor": start, "endCursor": end}
                union += [
                    d["_id"]
                    for d in engine.run(lambda ctx: build_mixed(ctx).paginate(opts))["page"]
                ]
            assert union == engine.run(lambda ctx: [d["_id"] for d in build_mixed(ctx).collect()])
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class _Sorted:
    """A value ordered by Convex's total order (the model's comparator)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __lt__(self, other: _Sorted) -> bool:
        return compare(self.value, other.value) < 0

    def __gt__(self, other: _Sorted) -> bool:
        return compare(self.value, other.value) > 0

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Sorted) and compare(self.value, other.value) == 0

    __hash__ = None  # type: ignore[assignment]


def _apply_mixed_edit(engine: Engine, kind: str, a: Any, i: int) -> None:
    docs = engine.run(lambda ctx: ctx.db.query("t").collect())
    if kind == "insert" or not docs:
        engine.run(lambda ctx: ctx.db.insert("t", _mixed_doc(a, i % 2 == 0)))
        return
    doc = docs[i % len(docs)]
    if kind == "delete":
        engine.run(lambda ctx: ctx.db.delete(doc["_id"]))
    elif kind == "move":  # a new indexed value: it may cross the cursor either way
        engine.run(lambda ctx: ctx.db.replace(doc["_id"], _mixed_doc(a, doc["k"])))
    else:
        engine.run(lambda ctx: ctx.db.patch(doc["_id"], {"k": not doc["k"]}))
