"""Pagination properties: complete walks, concurrent edits, end cursors, cursor fuzzing."""

from __future__ import annotations

import base64
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from engine import Engine, InvalidCursor, define_schema, define_table, v

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
