"""A paginated subscription keeps its page boundary (Convex's query journal).

A subscription to one page of a query (an index range in either order, or a full-text
search in relevance order), the first page or one from a cursor, sees random writes:
inserts before, inside and after the page, deletes (of its boundary row too), patches
of the index field (that move a row, the boundary row too, across the boundary) and of
the search field. After each write:

- its value is what a fresh run of the page returns with the end cursor of the
  subscription's first run (the journal), and its ``continueCursor`` stays that one;
- the pages still tile the query: the page, then every row after its end cursor,
  give what ``collect()`` gives (nothing skipped, nothing twice);
- a write to a document that is on the page neither before nor after it (its index
  keys, old and new, lie outside the page's interval) does not re-run it, for an index
  range (a search's page may re-run: its scores move with any matching document).
"""

from __future__ import annotations

import shutil
import tempfile
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from engine import Engine, QueryCtx, define_schema, define_table, query, v

SCHEMA = define_schema(
    {
        "t": define_table()
        .index("by_k", ["k"])
        .search_index("s", search_field="body", filter_fields=["k"])
    },
    schema_validation=False,
)
BODIES = ["w", "w w", "w x", "x", "ww", "w w w x"]
runs: list[int] = []


def build(ctx: QueryCtx, order: str, search: bool) -> Any:
    if search:
        return ctx.db.query("t").with_search_index("s", lambda q: q.search("body", "w"))
    return ctx.db.query("t").with_index("by_k").order(order)


@query(args={"opts": v.any(), "order": v.string(), "search": v.boolean()})
def page(ctx: QueryCtx, opts: Any, order: str, search: bool) -> Any:
    runs.append(1)
    result = build(ctx, order, search).paginate(opts)
    return {
        "docs": result["page"],
        "continueCursor": result["continueCursor"],
        "isDone": result["isDone"],
    }


@query(args={"order": v.string(), "search": v.boolean()})
def everything(ctx: QueryCtx, order: str, search: bool) -> Any:
    return build(ctx, order, search).collect()


writes = st.lists(
    st.one_of(
        st.tuples(st.just("insert"), st.integers(0, 20), st.sampled_from(BODIES)),
        st.tuples(st.just("delete"), st.integers(0, 40)),
        st.tuples(st.just("move"), st.integers(0, 40), st.integers(0, 20)),
        st.tuples(st.just("retext"), st.integers(0, 40), st.sampled_from(BODIES)),
        st.tuples(st.just("boundary"), st.sampled_from(["delete", "move"]), st.integers(0, 20)),
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=150, deadline=None)
@given(
    initial=st.lists(st.tuples(st.integers(0, 20), st.sampled_from(BODIES)), max_size=10),
    size=st.integers(1, 4),
    skip=st.integers(0, 2),  # pages before the subscribed one
    order=st.sampled_from(["asc", "desc"]),
    search=st.booleans(),
    ops=writes,
)
def test_a_paginated_subscription_keeps_its_boundary_and_tiles(
    initial: list[tuple[int, str]],
    size: int,
    skip: int,
    order: str,
    search: bool,
    ops: list[Any],
) -> None:
    folder = tempfile.mkdtemp()
    try:
        with Engine.open(folder, schema=SCHEMA, durability="none") as engine:
            check(engine, initial, size, skip, order, search, ops)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def check(
    engine: Engine,
    initial: list[tuple[int, str]],
    size: int,
    skip: int,
    order: str,
    search: bool,
    ops: list[Any],
) -> None:
    ids = engine.run(
        lambda ctx: [ctx.db.insert("t", {"k": k, "body": body}) for k, body in initial]
    )
    base = {"order": order, "search": search}
    cursor = None
    for _ in range(skip):
        earlier = engine.query(page, {**base, "opts": {"numItems": size, "cursor": cursor}})
        if earlier["isDone"]:
            break
        cursor = earlier["continueCursor"]
    args = {**base, "opts": {"numItems": size, "cursor": cursor}}
    with engine.subscribe(page, args) as sub:
        end = sub.value["continueCursor"]
        for op in ops:
            bounded = {**base, "opts": {"numItems": 1, "cursor": cursor, "endCursor": end}}
            before = {d["_id"] for d in engine.query(page, bounded)["docs"]}
            runs.clear()
            written = apply(engine, ids, op, sub.value)
            reran = bool(runs)
            fresh = engine.query(page, bounded)
            value = sub.value
            assert value["docs"] == fresh["docs"], op
            assert value["continueCursor"] == end
            assert value["isDone"] == fresh["isDone"]
            rest: list[Any] = []
            if not value["isDone"]:
                opts = {"numItems": 10_000, "cursor": end}
                rest = engine.query(page, {**base, "opts": opts})["docs"]
            head: list[Any] = []
            if cursor is not None:
                opts = {"numItems": 1, "cursor": None, "endCursor": cursor}
                head = engine.query(page, {**base, "opts": opts})["docs"]
            whole = engine.query(everything, base)
            assert [d["_id"] for d in head + value["docs"] + rest] == [d["_id"] for d in whole]
            after = {d["_id"] for d in fresh["docs"]}
            if not search and written is not None and written not in before | after:
                assert not reran, ("a write outside the page re-ran it", op)


def apply(engine: Engine, ids: list[str], op: Any, value: dict[str, Any]) -> str | None:
    """One write: an insert, or a write to a document by position (of those inserted
    first, then of the page's rows for ``boundary``); the id written (None: none)."""
    kind = op[0]
    if kind == "insert":
        ids.append(engine.run(lambda ctx: ctx.db.insert("t", {"k": op[1], "body": op[2]})))
        return ids[-1]
    if kind == "boundary":
        if not value["docs"]:
            return None
        target = value["docs"][-1]["_id"]
        kind, op = op[1], ("", 0, op[2])
    else:
        if not ids:
            return None
        target = ids[op[1] % len(ids)]
    if engine.run(lambda ctx: ctx.db.get(target)) is None:
        return None
    if kind == "delete":
        engine.run(lambda ctx: ctx.db.delete(target))
    elif kind == "move":
        engine.run(lambda ctx: ctx.db.patch(target, {"k": op[2]}))
    else:
        engine.run(lambda ctx: ctx.db.patch(target, {"body": op[2]}))
    return target
