"""Stateful property test: vector searches agree with a brute-force reference.

Random inserts, patches, replaces and deletes (single writes and several in one
mutation, some of which then raise) of documents whose vector field is a list of 3
small floats, or something Convex does not index (a list of another length, Int64
elements, a string, nothing), with filter fields of mixed types, missing included;
a schema change that drops and re-adds the index now and then (a backfill). After
each step random searches (any query vector, limits 1 to 12, ``or`` filters of
up to three equalities) run on the engine and on the model, which keeps the
documents as plain dicts and scores every indexable one with float64 cosine
similarity. Scores agree within float32's precision; the engine's order is by
score; and no document the engine left out scores better than the last one it
returned. ``check()`` runs after every step.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule

from engine import UNSET, Engine, define_schema, define_table
from engine.contexts import ActionCtx
from tests.property.machines import EngineMachine

INDEXED = define_schema(
    {
        "docs": define_table().vector_index(
            "by_vector", vector_field="vector", dimensions=3, filter_fields=["kind", "size"]
        )
    },
    schema_validation=False,
)
PLAIN = define_schema({"docs": define_table()}, schema_validation=False)

COMPONENTS = st.sampled_from([0.0, 1.0, -1.0, 0.5, 2.0, -0.25, 3.0])
VECTORS = st.one_of(
    st.lists(COMPONENTS, min_size=3, max_size=3),
    st.lists(COMPONENTS, min_size=3, max_size=3),
    st.lists(COMPONENTS, min_size=2, max_size=2),
    st.lists(st.integers(-2, 2), min_size=3, max_size=3),
    st.sampled_from([UNSET, "1,0,0", None]),
)
FILTER_VALUES = st.sampled_from(["a", "b", None, 1, 1.0, UNSET])
QUERIES = st.lists(st.sampled_from([1.0, -1.0, 0.5, 0.0, 2.0]), min_size=3, max_size=3).filter(
    lambda q: any(q)
)
FILTERS = st.lists(st.tuples(st.sampled_from(["kind", "size"]), FILTER_VALUES), max_size=3)


def indexable(document: dict[str, Any]) -> list[float] | None:
    vector = document.get("vector", UNSET)
    if type(vector) is not list or len(vector) != 3 or any(type(x) is not float for x in vector):
        return None
    return vector


def cosine(a: list[float], b: list[float]) -> float:
    na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(x * x for x in b))
    if na == 0:
        return 0.0
    return sum(x * y for x, y in zip(a, b, strict=True)) / (na * nb)


def same_value(a: Any, b: Any) -> bool:
    """Convex equality for filter values: types apart (1 is not 1.0), missing its own."""
    return type(a) is type(b) and a == b


def fields_of(vector: Any, kind: Any, size: Any) -> dict[str, Any]:
    fields = {"vector": vector, "kind": kind, "size": size}
    return {k: x for k, x in fields.items() if x is not UNSET}


class VectorModel(EngineMachine):
    documents = EngineMachine.documents

    schema = INDEXED

    @rule(target=documents, vector=VECTORS, kind=FILTER_VALUES, size=FILTER_VALUES)
    def insert(self, vector: Any, kind: Any, size: Any) -> str:
        fields = fields_of(vector, kind, size)
        doc_id: str = self.engine.run(lambda ctx: ctx.db.insert("docs", dict(fields)))
        self.model[doc_id] = fields
        return doc_id

    @rule(
        doc_id=documents,
        field=st.sampled_from(["vector", "kind", "size"]),
        value=st.one_of(VECTORS, FILTER_VALUES),
    )
    def patch(self, doc_id: str, field: str, value: Any) -> None:
        if doc_id not in self.model:
            return
        self.engine.run(lambda ctx: ctx.db.patch(doc_id, {field: value}))
        if value is UNSET:
            self.model[doc_id].pop(field, None)
        else:
            self.model[doc_id][field] = value

    @rule(doc_id=documents, vector=VECTORS, kind=FILTER_VALUES)
    def replace(self, doc_id: str, vector: Any, kind: Any) -> None:
        if doc_id not in self.model:
            return
        fields = fields_of(vector, kind, UNSET)
        self.engine.run(lambda ctx: ctx.db.replace(doc_id, dict(fields)))
        self.model[doc_id] = fields

    @rule(
        writes=st.lists(st.tuples(VECTORS, FILTER_VALUES), min_size=1, max_size=4),
        fail=st.booleans(),
    )
    def several_in_one_mutation(self, writes: list[tuple[Any, Any]], fail: bool) -> None:
        """Inserts then patches of the same documents in one transaction; maybe rolled back."""

        class Rollback(Exception):
            pass

        made: dict[str, dict[str, Any]] = {}

        def body(ctx: Any) -> None:
            made.clear()
            for vector, kind in writes:
                fields = fields_of(vector, kind, UNSET)
                doc_id = ctx.db.insert("docs", dict(fields))
                ctx.db.patch(doc_id, {"size": 1})
                made[doc_id] = {**fields, "size": 1}
            if fail:
                raise Rollback

        try:
            self.engine.run(body)
        except Rollback:
            return
        self.model.update(made)

    @precondition(lambda self: len(self.model) > 0)
    @rule()
    def rebuild_index(self) -> None:
        """Drop the vector index and declare it again: a backfill from the documents."""
        self.engine.close()
        Engine.open(self.folder, schema=PLAIN, durability="none").close()
        self.engine = Engine.open(self.folder, schema=INDEXED, durability="none")

    @rule(query=QUERIES, limit=st.integers(1, 12), filters=FILTERS)
    def search(self, query: list[float], limit: int, filters: list[tuple[str, Any]]) -> None:
        def build(q: Any) -> Any:
            return q.or_(*(q.eq(field, value) for field, value in filters))

        async def body(ctx: ActionCtx) -> Any:
            return await ctx.vector_search(
                "docs", "by_vector", vector=query, limit=limit, filter=build if filters else None
            )

        found = asyncio.run(body(ActionCtx(self.engine._runtime, None)))
        candidates: dict[str, float] = {}
        for doc_id, document in self.model.items():
            vector = indexable(document)
            if vector is None:
                continue
            if filters and not any(
                same_value(document.get(field, UNSET), value) for field, value in filters
            ):
                continue
            candidates[doc_id] = cosine(vector, query)
        assert len(found) == min(limit, len(candidates))
        scores = [r["_score"] for r in found]
        assert scores == sorted(scores, reverse=True)
        for result in found:
            assert result["_id"] in candidates, result
            assert math.isclose(result["_score"], candidates[result["_id"]], abs_tol=1e-5)
        returned = {r["_id"] for r in found}
        if found:
            worst = found[-1]["_score"]
            assert all(s <= worst + 1e-5 for i, s in candidates.items() if i not in returned)


TestVectorModel = VectorModel.TestCase
TestVectorModel.settings = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
