"""A query reads in one loop, a mutation streams: the two read paths must agree.

Read-only transactions read ``collect``/``take``/``first`` results with
``Scans.read_rows`` (chunked, without a generator); mutations stream through
``Scans.scan``, merging their own writes. Over random data, index ranges,
orders, filters and limits both must return the same documents and record the
same read set (what subscriptions and commit validation rely on).
"""

from __future__ import annotations

import shutil
import tempfile
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from engine import Engine, define_schema, define_table, v
from engine.contexts import MutationCtx, QueryCtx
from engine.scans import _CHUNK

SCHEMA = define_schema(
    {"items": define_table({"g": v.int64(), "n": v.int64()}).index("by_g", ["g"])},
    schema_validation=False,
)


def read(engine: Engine, plan: dict[str, Any], *, writable: bool) -> tuple[Any, Any]:
    def body(txn: Any) -> tuple[Any, Any]:
        ctx = (MutationCtx if writable else QueryCtx)(None, txn, None, 0.0)
        q = ctx.db.query("items")
        if plan["index"] == "range":
            q = q.with_index("by_g", lambda r: r.gte("g", plan["low"]).lt("g", plan["high"]))
        elif plan["index"] == "eq":
            q = q.with_index("by_g", lambda r: r.eq("g", plan["low"]))
        q = q.order(plan["order"])
        if plan["filter"]:
            q = q.filter(lambda f: f.neq(f.mod(f.field("n"), 3), 0))
        if plan["take"] is None:
            result = q.collect()
        elif plan["take"] == "first":
            result = q.first()
        else:
            result = q.take(plan["take"])
        return result, txn.reads.freeze().pairs()

    return engine._db.run(body, writable=writable)[0]


plans = st.fixed_dictionaries(
    {
        "index": st.sampled_from(["none", "range", "eq"]),
        "low": st.integers(0, 6),
        "high": st.integers(0, 8),
        "order": st.sampled_from(["asc", "desc"]),
        "filter": st.booleans(),
        # Around the chunk size too: a take that ends inside, at and past a chunk.
        "take": st.none()
        | st.just("first")
        | st.integers(1, 12)
        | st.sampled_from([_CHUNK - 1, _CHUNK, _CHUNK + 1]),
    }
)


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.integers(0, 7), max_size=2 * _CHUNK + 10), plan=plans)
def test_queries_and_mutations_read_alike(values: list[int], plan: dict[str, Any]) -> None:
    folder = tempfile.mkdtemp()
    try:
        with Engine.open(folder, schema=SCHEMA, durability="none") as engine:
            if values:
                engine.run(
                    lambda ctx: [
                        ctx.db.insert("items", {"g": g, "n": i}) for i, g in enumerate(values)
                    ]
                )
            in_query = read(engine, plan, writable=False)
            in_mutation = read(engine, plan, writable=True)
            assert in_query == in_mutation
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def read_until_limit(engine: Engine, plan: dict[str, Any], *, writable: bool) -> Any:
    """Run the plan's query, catching Convex's read limit: what was raised and counted."""
    from engine.errors import LimitExceeded

    def body(txn: Any) -> Any:
        ctx = (MutationCtx if writable else QueryCtx)(None, txn, None, 0.0)
        q = ctx.db.query("items").order(plan["order"])
        if plan["filter"]:
            q = q.filter(lambda f: f.neq(f.mod(f.field("n"), 3), 0))
        try:
            result: Any = q.collect() if plan["take"] is None else q.take(plan["take"])
        except LimitExceeded as error:
            result = (error.limit, str(error))
        return result, txn.documents_read, txn.bytes_read

    return engine._db.run(body, writable=writable)[0]


@settings(max_examples=60, deadline=None)
@given(
    pads=st.lists(st.integers(0, 300), min_size=1, max_size=2 * _CHUNK + 10),
    max_documents=st.integers(1, 2 * _CHUNK + 20),
    max_bytes=st.integers(50, 40_000),
    plan=st.fixed_dictionaries(
        {
            "order": st.sampled_from(["asc", "desc"]),
            "filter": st.booleans(),
            "take": st.none() | st.integers(1, 2 * _CHUNK + 20),
        }
    ),
)
def test_read_limits_stop_both_paths_at_the_same_row(
    pads: list[int], max_documents: int, max_bytes: int, plan: dict[str, Any]
) -> None:
    """The same error (documents or bytes), at the same row, with the same counts."""
    from engine import scans

    folder = tempfile.mkdtemp()
    saved = scans.MAX_DOCUMENTS_READ, scans.MAX_BYTES_READ
    try:
        with Engine.open(folder, schema=SCHEMA, durability="none") as engine:
            engine.run(
                lambda ctx: [
                    ctx.db.insert("items", {"g": 0, "n": i, "pad": "x" * pad})
                    for i, pad in enumerate(pads)
                ]
            )
            scans.MAX_DOCUMENTS_READ, scans.MAX_BYTES_READ = max_documents, max_bytes
            in_query = read_until_limit(engine, plan, writable=False)
            in_mutation = read_until_limit(engine, plan, writable=True)
            assert in_query == in_mutation
    finally:
        scans.MAX_DOCUMENTS_READ, scans.MAX_BYTES_READ = saved
        shutil.rmtree(folder, ignore_errors=True)
