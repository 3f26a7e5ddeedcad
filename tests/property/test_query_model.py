"""Stateful property test: queries agree with a plain-Python reference model.

Random inserts, patches and deletes of documents with mixed-type fields; after
each step, random index ranges, orders and filters run both on the engine and
on the model (sort with Convex's comparator, then filter), committed and
inside a mutation that has uncommitted writes of its own.

Every index ends with ``_creationTime`` and ``_id``, and the model orders and
bounds ``_id`` as the string it is (Convex keeps it in index keys as a String):
ranges on ``_id`` draw any value, mostly strings near the ids of documents,
live or deleted.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import rule

from engine import UNSET, define_schema, define_table
from engine.readers import DatabaseReader
from engine.values import compare
from tests.property.machines import EngineMachine
from tests.property.strategies import id_edits, id_strings

PRESENT_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([-0.0, 0.0, 1.5, -2.0]),
    st.sampled_from(["", "a", "b", "ab"]),
    st.sampled_from([b"", b"\x00", b"a"]),
    # Index keys past LMDB's 511 bytes (engine.longkeys): values sharing a long prefix
    # share one entry; "L" * 480 gives a key of exactly 511 bytes.
    st.sampled_from(["L" * 480, "L" * 490, "L" * 600, "L" * 600 + "a", "L" * 600 + "\x00"]),
)
FIELD_VALUES = st.one_of(PRESENT_VALUES, st.just(UNSET))
INDEXES = {"by_x": ["x"], "by_x_y": ["x", "y"], "by_y": ["y"]}
SCHEMA = define_schema(
    {
        "docs": define_table({})
        .index("by_x", ["x"])
        .index("by_x_y", ["x", "y"])
        .index("by_y", ["y"])
    },
    schema_validation=False,
)


def field(doc: dict[str, Any], name: str) -> Any:
    return doc.get(name, UNSET)


def effective_fields(index: str | None) -> list[str]:
    """What an index orders by: its fields, then ``_creationTime``, then ``_id``."""
    if index == "by_id":
        return ["_id"]
    return [*INDEXES.get(index or "", []), "_creationTime", "_id"]


def sort_key(fields: list[str]) -> Any:
    def cmp(a: dict[str, Any], b: dict[str, Any]) -> int:
        for name in fields:  # ends with _id, compared as a string
            c = compare(field(a, name), field(b, name))
            if c:
                return c
        return 0

    return functools.cmp_to_key(cmp)


def model_query(
    docs: list[dict[str, Any]],
    index: str | None,
    eqs: list[Any],
    bound: tuple[str, Any, str, Any] | None,
    order: str,
    flt: Any,
) -> list[str]:
    fields = effective_fields(index)
    rows = sorted(docs, key=sort_key(fields))
    out = []
    for doc in rows:
        ok = all(compare(field(doc, fields[i]), value) == 0 for i, value in enumerate(eqs))
        if ok and bound is not None:
            name = fields[len(eqs)]
            lo_op, lo, hi_op, hi = bound
            v = field(doc, name)
            if lo_op == "gt":
                ok = compare(v, lo) > 0
            elif lo_op == "gte":
                ok = compare(v, lo) >= 0
            if ok and hi_op == "lt":
                ok = compare(v, hi) < 0
            elif ok and hi_op == "lte":
                ok = compare(v, hi) <= 0
        if ok and flt is not None:
            ok = compare(field(doc, "y"), flt) >= 0
        if ok:
            out.append(doc["_id"])
    return out[::-1] if order == "desc" else out


def index_range(fields: list[str], eqs: list[Any], bound: tuple[str, Any, str, Any] | None) -> Any:
    """The ``with_index`` range: equalities on a prefix of ``fields``, then the bound
    ``(lower op or "", lower, upper op or "", upper)`` on the next field."""

    def rng(r: Any) -> Any:
        for i, value in enumerate(eqs):
            r = r.eq(fields[i], value)
        if bound is not None:
            name = fields[len(eqs)]
            lo_op, lo, hi_op, hi = bound
            if lo_op:
                r = getattr(r, lo_op)(name, lo)
            if hi_op:
                r = getattr(r, hi_op)(name, hi)
        return r

    return rng


def engine_query(
    ctx: Any,
    index: str | None,
    eqs: list[Any],
    bound: tuple[str, Any, str, Any] | None,
    order: str,
    flt: Any,
) -> list[str]:
    q = ctx.db.query("docs")
    if index is not None:
        q = q.with_index(index, index_range(effective_fields(index), eqs, bound))
    q = q.order(order)
    if flt is not None:
        q = q.filter(lambda f: f.gte(f.field("y"), flt))
    return [d["_id"] for d in q.collect()]


query_shapes = st.sampled_from([None, "by_x", "by_x_y", "by_y"]).flatmap(
    lambda index: st.tuples(
        st.just(index),
        st.lists(FIELD_VALUES, max_size=len(INDEXES[index]) if index else 0),
        st.one_of(
            st.none(),
            st.tuples(
                st.sampled_from(["", "gt", "gte"]),
                FIELD_VALUES,
                st.sampled_from(["", "lt", "lte"]),
                FIELD_VALUES,
            ),
        ),
        st.sampled_from(["asc", "desc"]),
        st.one_of(st.none(), PRESENT_VALUES),
    )
)


def normalize(shape: Any) -> Any:
    index, eqs, bound, order, flt = shape
    if index is None:
        return None, [], None, order, flt
    fields = INDEXES[index]
    if bound is not None and (len(eqs) >= len(fields) or (not bound[0] and not bound[2])):
        bound = None
    return index, eqs, bound, order, flt


class QueryModel(EngineMachine):
    documents = EngineMachine.documents

    schema = SCHEMA

    @rule(target=documents, x=FIELD_VALUES, y=FIELD_VALUES)
    def insert(self, x: Any, y: Any) -> str:
        fields = {k: val for k, val in (("x", x), ("y", y)) if val is not UNSET}
        doc_id = self.engine.run(lambda ctx: ctx.db.insert("docs", dict(fields)))
        self.model[doc_id] = self.engine.run(lambda ctx: ctx.db.get(doc_id))
        return doc_id

    @rule(doc_id=documents, x=FIELD_VALUES)
    def patch(self, doc_id: str, x: Any) -> None:
        if doc_id not in self.model:
            return
        self.engine.run(lambda ctx: ctx.db.patch(doc_id, {"x": x}))
        doc = dict(self.model[doc_id])
        if x is UNSET:
            doc.pop("x", None)
        else:
            doc["x"] = x
        self.model[doc_id] = doc

    @rule(shape=query_shapes)
    def query(self, shape: Any) -> None:
        args = normalize(shape)
        expected = model_query(list(self.model.values()), *args)
        got = self.engine.run(lambda ctx: engine_query(ctx, *args))
        assert got == expected
        # and in a read-only transaction (a query function's path)
        got, _ = self.engine._db.run(
            lambda txn: engine_query(SimpleNamespace(db=DatabaseReader(txn)), *args), writable=False
        )
        assert got == expected

    @rule(
        index=st.sampled_from(["by_id", "by_creation_time", "by_x", "by_x_y"]),
        anchor=documents,
        order=st.sampled_from(["asc", "desc"]),
        flt=st.one_of(st.none(), PRESENT_VALUES),
        data=st.data(),
    )
    def query_id_range(self, index: str, anchor: str, order: str, flt: Any, data: Any) -> None:
        """Equalities on every field before ``_id`` (an anchor document's values; when
        it was deleted, values no document has), then an equality or bounds on ``_id``,
        each drawn value with every operator, and pairs of them as both bounds."""
        doc = self.model.get(anchor, {"_creationTime": 1.0, "_id": anchor})
        fields = effective_fields(index)
        eqs = [field(doc, name) for name in fields[:-1]]
        live = sorted(self.model) or [anchor]
        values = data.draw(
            st.lists(
                st.one_of(
                    st.sampled_from(live).flatmap(id_edits),
                    id_edits(anchor),
                    id_strings(st.sampled_from([10001, 10002, 10129])),
                    FIELD_VALUES,
                ),
                min_size=1,
                max_size=6,
            )
        )
        shapes: list[tuple[Any, ...]] = []
        for value in values:
            shapes.append((index, [*eqs, value], None, order, flt))
            shapes += [(index, eqs, (op, value, "", None), order, flt) for op in ("gt", "gte")]
            shapes += [(index, eqs, ("", None, op, value), order, flt) for op in ("lt", "lte")]
        for low, high in zip(values, values[1:], strict=False):
            lo_op, hi_op = (
                data.draw(st.sampled_from(["gt", "gte"])),
                data.draw(st.sampled_from(["lt", "lte"])),
            )
            shapes.append((index, eqs, (lo_op, low, hi_op, high), order, flt))
        for args in shapes:
            expected = model_query(list(self.model.values()), *args)
            assert self.engine.run(lambda ctx, args=args: engine_query(ctx, *args)) == expected
            got, _ = self.engine._db.run(
                lambda txn, args=args: engine_query(SimpleNamespace(db=DatabaseReader(txn)), *args),
                writable=False,
            )
            assert got == expected

    @rule(shape=query_shapes, x=FIELD_VALUES, y=FIELD_VALUES, doc_id=documents)
    def query_inside_mutation(self, shape: Any, x: Any, y: Any, doc_id: str) -> None:
        """Own uncommitted writes are visible, in index order, then rolled back."""
        args = normalize(shape)

        class Rollback(Exception):
            pass

        model = dict(self.model)
        result: list[list[str]] = []

        def body(ctx: Any) -> None:
            new_id = ctx.db.insert(
                "docs", {k: val for k, val in (("x", x), ("y", y)) if val is not UNSET}
            )
            model[new_id] = ctx.db.get(new_id)
            if doc_id in model:
                ctx.db.delete(doc_id)
                del model[doc_id]
            result.append(engine_query(ctx, *args))
            raise Rollback

        try:
            self.engine.run(body)
        except Rollback:
            pass
        assert result[0] == model_query(list(model.values()), *args)


TestQueryModel = QueryModel.TestCase
TestQueryModel.settings = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    # Rules that draw from the (at first empty) documents bundle are discarded
    # until a document exists; with some seeds that trips filter_too_much.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
