"""Index ranges and filters on ``_id``: an id is a string, and a bound is any value.

Convex keeps ``_id`` in index keys as a String (``IndexKey`` in
crates/common/src/index.rs) and compiles a range without looking at what its
values are (``IndexRange::compile`` in crates/common/src/query.rs), so
``q.gt("_id", "")`` or ``q.eq("_id", "not-an-id")`` is a legal range that
matches the ids comparing so. Our index keys end with the internal id instead;
these tests hold every range on ``_id`` to the string comparison.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from engine import UNSET, Engine, InvalidId, define_schema, define_table, ids, v
from engine.readers import DatabaseReader
from engine.values import compare

SCHEMA = define_schema(
    {
        "a": define_table({"n": v.int64()}).index("by_n", ["n"]),
        "b": define_table({"n": v.int64()}).index("by_n", ["n"]),
    }
)

OPS: dict[str, Callable[[int], bool]] = {
    "eq": lambda c: c == 0,
    "gt": lambda c: c > 0,
    "gte": lambda c: c >= 0,
    "lt": lambda c: c < 0,
    "lte": lambda c: c <= 0,
}
NON_STRINGS = [UNSET, None, 0, 1.5, True, b"", [], {}]


@pytest.fixture
def tables(db_path: Path):  # type: ignore[no-untyped-def]
    with Engine.open(db_path, schema=SCHEMA, durability="none") as engine:
        engine.run(
            lambda ctx: [ctx.db.insert(t, {"n": i % 2}) for t in ("a", "b") for i in range(6)]
        )
        yield engine
        engine.check()


def documents(engine: Engine, table: str) -> list[dict[str, Any]]:
    return engine.run(lambda ctx: ctx.db.query(table).collect())


def bounds(own: list[str], other: list[str]) -> list[Any]:
    """Range values around ``own`` ids: the ids, their neighbours as strings, other
    tables' ids, strings before, among and after every id, and non-strings."""
    first = min(own)
    near = [first[:-1] + c for c in "0z" if first[:-1] + c != first]
    return [
        *own,
        *near,
        first + "0",
        first[:10],
        first.upper(),
        *other[:2],
        max(other),
        "",
        "0",
        "j",
        first[:2],
        "z",
        "~",
        "\x00",
        "\xe9",
        *NON_STRINGS,
    ]


def expected(docs: list[dict[str, Any]], op: str, value: Any) -> list[str]:
    return sorted(d["_id"] for d in docs if OPS[op](compare(d["_id"], value)))


@pytest.mark.parametrize("table", ["a", "b"])
def test_by_id_bounds_compare_as_strings(tables: Engine, table: str) -> None:
    docs = documents(tables, table)
    own = [d["_id"] for d in docs]
    other = [d["_id"] for d in documents(tables, "b" if table == "a" else "a")]
    for value in bounds(own, other):
        for op in OPS:

            def run(ctx: Any, op: str = op, value: Any = value) -> list[str]:
                q = ctx.db.query(table).with_index("by_id", lambda r: getattr(r, op)("_id", value))
                return [d["_id"] for d in q.collect()]

            want = expected(docs, op, value)
            assert tables.run(run) == want, (op, value)
            got, _ = tables._db.run(
                lambda txn, run=run: run(SimpleNamespace(db=DatabaseReader(txn))), writable=False
            )
            assert got == want, (op, value)


def test_an_upper_and_a_lower_bound_on_id(tables: Engine) -> None:
    docs = documents(tables, "a")
    own = sorted(d["_id"] for d in docs)
    values = [own[1], own[3], own[1] + "0", own[3][:-1], "", "~", own[0][:3]]
    for low in values:
        for high in values:
            for lo_op in ("gt", "gte"):
                for hi_op in ("lt", "lte"):
                    want = [
                        i
                        for i in own
                        if OPS[lo_op](compare(i, low)) and OPS[hi_op](compare(i, high))
                    ]
                    for order in ("asc", "desc"):
                        got = tables.run(
                            lambda ctx, lo_op=lo_op, low=low, hi_op=hi_op, high=high, order=order: [
                                d["_id"]
                                for d in ctx.db.query("a")
                                .with_index(
                                    "by_id",
                                    lambda r: getattr(getattr(r, lo_op)("_id", low), hi_op)(
                                        "_id", high
                                    ),
                                )
                                .order(order)
                                .collect()
                            ]
                        )
                        assert got == (want if order == "asc" else want[::-1])


@pytest.mark.parametrize("index", ["by_creation_time", "by_n"])
def test_the_implicit_id_at_the_end_of_an_index(tables: Engine, index: str) -> None:
    """Every index ends with ``_id``: a bound there follows equalities on the rest."""
    docs = documents(tables, "b")
    other = [d["_id"] for d in documents(tables, "a")]
    for doc in docs[:3]:
        for value in bounds([doc["_id"]], other):
            for op in OPS:

                def rng(r: Any, doc: Any = doc, op: str = op, value: Any = value) -> Any:
                    if index == "by_n":
                        r = r.eq("n", doc["n"])
                    return getattr(r.eq("_creationTime", doc["_creationTime"]), op)("_id", value)

                got = tables.run(
                    lambda ctx, rng=rng: [
                        d["_id"] for d in ctx.db.query("b").with_index(index, rng).collect()
                    ]
                )
                assert got == expected([doc], op, value), (op, value)


def test_convex_examples(tables: Engine) -> None:
    docs = documents(tables, "b")
    a_ids = [d["_id"] for d in documents(tables, "a")]

    def by_id(table: str, rng: Callable[[Any], Any]) -> list[str]:
        return tables.run(
            lambda ctx: [d["_id"] for d in ctx.db.query(table).with_index("by_id", rng).collect()]
        )

    assert by_id("b", lambda q: q.gt("_id", "")) == sorted(d["_id"] for d in docs)
    assert by_id("b", lambda q: q.eq("_id", "not-an-id")) == []
    # a's table number (10001) is below b's (10002): its ids sort first as strings
    assert max(a_ids) < min(d["_id"] for d in docs)
    assert by_id("b", lambda q: q.gt("_id", a_ids[0])) == sorted(d["_id"] for d in docs)
    assert by_id("b", lambda q: q.lt("_id", a_ids[0])) == []
    assert by_id("b", lambda q: q.eq("_id", a_ids[0])) == []
    assert by_id("a", lambda q: q.gt("_id", docs[0]["_id"])) == []
    assert by_id("a", lambda q: q.lte("_id", docs[0]["_id"])) == sorted(a_ids)


@pytest.mark.parametrize("op", list(OPS))
def test_filters_on_id_compare_as_strings(tables: Engine, op: str) -> None:
    docs = documents(tables, "a")
    other = [d["_id"] for d in documents(tables, "b")]
    for value in bounds([d["_id"] for d in docs], other):
        got = tables.run(
            lambda ctx, value=value: [
                d["_id"]
                for d in ctx.db.query("a")
                .filter(lambda q: getattr(q, op)(q.field("_id"), value))
                .collect()
            ]
        )
        assert sorted(got) == expected(docs, op, value), value


def test_own_writes_inside_an_id_range(tables: Engine) -> None:
    """A mutation's scan merges its pending inserts into the same byte interval."""

    def body(ctx: Any) -> tuple[list[str], list[str]]:
        new = [ctx.db.insert("a", {"n": 5}) for _ in range(4)]
        everything = sorted(d["_id"] for d in ctx.db.query("a").collect())
        middle = everything[len(everything) // 2] + "0"
        got = [
            d["_id"]
            for d in ctx.db.query("a").with_index("by_id", lambda q: q.gt("_id", middle)).collect()
        ]
        assert set(new) <= set(everything)
        return got, [i for i in everything if i > middle]

    got, want = tables.run(body)
    assert got == want and got


def test_paginating_an_id_range(tables: Engine) -> None:
    own = sorted(d["_id"] for d in documents(tables, "a"))
    low = own[1] + "0"  # no id: sorts just after own[1]
    want = own[2:]
    pages: list[str] = []
    cursor = None
    while True:
        page = tables.run(
            lambda ctx, cursor=cursor: (
                ctx.db.query("a")
                .with_index("by_id", lambda q: q.gt("_id", low))
                .paginate({"numItems": 2, "cursor": cursor})
            )
        )
        pages += [d["_id"] for d in page["page"]]
        cursor = page["continueCursor"]
        if page["isDone"]:
            break
    assert pages == want


def test_get_and_normalize_id_keep_their_rules(tables: Engine) -> None:
    """Not ranges: ``db.get`` of a string that is no id raises, as Convex's ``1.0/get``
    (DeveloperDocumentId::decode in crates/isolate/src/environment/udf/async_syscall.rs);
    ``normalize_id`` answers None (syscall.rs, syscall_normalize_id)."""
    a_id = documents(tables, "a")[0]["_id"]
    for junk in ("junk", "", a_id[:-1], a_id.upper()):
        with pytest.raises(InvalidId):
            tables.run(lambda ctx, junk=junk: ctx.db.get(junk))
        assert tables.run(lambda ctx, junk=junk: ctx.db.normalize_id("a", junk)) is None
    assert tables.run(lambda ctx: ctx.db.normalize_id("b", a_id)) is None
    assert tables.run(lambda ctx: ctx.db.normalize_id("a", a_id)) == a_id
    assert ids.is_id(a_id)
