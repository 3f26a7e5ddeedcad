"""Vector indexes: schema rules, entries kept with the documents, ctx.vector_search."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lmdb
import pytest

from engine import (
    UNSET,
    ActionCtx,
    CorruptionError,
    Engine,
    EngineError,
    IndexNotFound,
    SchemaValidationError,
    VectorSearchError,
    action,
    define_schema,
    define_table,
    v,
)
from tests.readers import ReaderCount

FOOD = {
    "name": v.string(),
    "cuisine": v.optional(v.union(v.string(), v.null())),
    "rank": v.optional(v.union(v.int64(), v.float64())),
    "embedding": v.optional(v.array(v.float64())),
}


def food_schema(dimensions: int = 3, filters: tuple[str, ...] = ("cuisine",)) -> Any:
    return define_schema(
        {
            "foods": define_table(FOOD)
            .index("by_name", ["name"])
            .vector_index(
                "by_embedding",
                vector_field="embedding",
                dimensions=dimensions,
                filter_fields=list(filters),
            )
        }
    )


@pytest.fixture
def engine(db_path: Path) -> Iterator[Engine]:
    with Engine.open(db_path, schema=food_schema(), durability="none") as opened:
        yield opened


def insert(engine: Engine, *docs: dict[str, Any]) -> list[str]:
    return engine.run(lambda ctx: [ctx.db.insert("foods", d) for d in docs])


def search(engine: Engine, vector: Any = None, **kw: Any) -> list[dict[str, Any]]:
    async def body(ctx: Any) -> list[dict[str, Any]]:
        return await ctx.vector_search(
            "foods", kw.pop("index", "by_embedding"), vector=vector, **kw
        )

    return engine.action(body)


def cosine(a: list[float], b: list[float]) -> float:
    na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(x * x for x in b))
    if na == 0 or nb == 0:
        return 0.0
    return sum(x * y for x, y in zip(a, b, strict=True)) / (na * nb)


# -- schema --------------------------------------------------------------------


def test_keywords_and_convex_dict_declare_the_same_index() -> None:
    a = define_table(FOOD).vector_index(
        "v", vector_field="embedding", dimensions=8, filter_fields=["cuisine", "cuisine"]
    )
    b = define_table(FOOD).vector_index(
        "v", {"vectorField": "embedding", "dimensions": 8, "filterFields": ["cuisine"]}
    )
    assert a.vector_indexes == b.vector_indexes == {"v": ("embedding", 8, ("cuisine",))}
    schema = define_schema({"foods": a})
    assert schema.to_json()["tables"]["foods"]["vectorIndexes"] == [
        {
            "indexDescriptor": "v",
            "vectorField": "embedding",
            "dimensions": 8,
            "filterFields": ["cuisine"],
        }
    ]
    from engine.schema import schema_from_json

    assert schema_from_json(schema.to_json()).tables["foods"].vector_indexes == a.vector_indexes
    assert "vector_index('v', vector_field='embedding', dimensions=8" in repr(a)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"vector_field": "embedding", "dimensions": 1}, "Dimensions 1 must be between 2 and 4096"),
        ({"vector_field": "embedding", "dimensions": 4097}, "Dimensions 4097 must be between"),
        ({"vector_field": "embedding", "dimensions": 3.0}, "Dimensions 3.0 must be between"),
        ({"vector_field": "embedding", "dimensions": True}, "Dimensions True must be between"),
        ({"dimensions": 3}, "needs exactly one vector field"),
        ({"vector_field": "_id", "dimensions": 3}, "IndexFieldNameReserved"),
        (
            {
                "vector_field": "embedding",
                "dimensions": 3,
                "filter_fields": [f"f{i}" for i in range(17)],
            },
            "Search indexes may have up to 16 filter fields",
        ),
        ({"vector_field": "embedding", "dimensions": 3, "filter_fields": "cuisine"}, "list"),
    ],
)
def test_vector_index_rules(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(SchemaValidationError, match=message):
        define_table(FOOD).vector_index("v", **kwargs)


def test_convex_dict_form_rules() -> None:
    table = define_table(FOOD)
    with pytest.raises(SchemaValidationError, match="unknown configuration keys"):
        table.vector_index("v", {"vectorField": "embedding", "dimension": 3})
    with pytest.raises(SchemaValidationError, match="not both"):
        table.vector_index("v", {"vectorField": "embedding", "dimensions": 3}, dimensions=3)
    with pytest.raises(SchemaValidationError, match="Duplicate index name"):
        table.index("v", ["name"]).vector_index("v", vector_field="embedding", dimensions=3)


def test_schema_level_rules() -> None:
    five = define_table({f"e{i}": v.array(v.float64()) for i in range(5)})
    for i in range(5):
        five.vector_index(f"v{i}", vector_field=f"e{i}", dimensions=3)
    with pytest.raises(SchemaValidationError, match="TooManyVectorIndexes"):
        define_schema({"t": five})
    same = (
        define_table(FOOD)
        .vector_index("a", vector_field="embedding", dimensions=3)
        .vector_index("b", vector_field="embedding", dimensions=3, filter_fields=["cuisine"])
    )
    with pytest.raises(SchemaValidationError, match="VectorIndexFieldNotUnique"):
        define_schema({"t": same})


@pytest.mark.parametrize(
    ("field", "ok"),
    [
        (v.array(v.float64()), True),
        (v.optional(v.array(v.float64())), True),
        (v.union(v.array(v.float64()), v.null()), True),
        (v.array(v.any()), True),
        (v.any(), True),
        (v.array(v.int64()), False),
        (v.string(), False),
        (v.object({"x": v.array(v.float64())}), False),
    ],
)
def test_the_vector_field_must_be_able_to_hold_an_array_of_float64(field: Any, ok: bool) -> None:
    table = define_table({"e": field}).vector_index("v", vector_field="e", dimensions=3)
    if ok:
        define_schema({"t": table})
    else:
        with pytest.raises(
            SchemaValidationError,
            match='the vector index "v" is invalid because it references the field "e" that is '
            "neither an array of float64 or optional array of float64",
        ):
            define_schema({"t": table})
    # Without schema validation the document types are not known: accepted, as Convex.
    define_schema({"t": table}, schema_validation=False)


def test_vector_indexes_count_against_the_64_indexes_of_a_table() -> None:
    table = define_table(None)
    for i in range(63):
        table.index(f"i{i}", [f"f{i}"])
    table.vector_index("v", vector_field="e", dimensions=3)
    define_schema({"t": table})
    table.vector_index("w", vector_field="e2", dimensions=3)
    with pytest.raises(SchemaValidationError, match="TooManyIndexes"):
        define_schema({"t": table})


# -- search --------------------------------------------------------------------


def test_results_are_ids_and_cosine_scores_best_first(engine: Engine) -> None:
    rows = [
        {"name": "a", "cuisine": "French", "embedding": [1.0, 0.0, 0.0]},
        {"name": "b", "cuisine": "Thai", "embedding": [0.0, 1.0, 0.0]},
        {"name": "c", "cuisine": "French", "embedding": [0.6, 0.8, 0.0]},
        {"name": "d", "cuisine": "Thai", "embedding": [-1.0, 0.0, 0.0]},
    ]
    ids = insert(engine, *rows)
    found = search(engine, [2, 0.5, 0])
    assert [r["_id"] for r in found] == [ids[0], ids[2], ids[1], ids[3]]
    for result in found:
        row = rows[ids.index(result["_id"])]
        assert result["_score"] == pytest.approx(cosine(row["embedding"], [2, 0.5, 0]), abs=1e-6)
        assert set(result) == {"_id", "_score"}
    assert found[-1]["_score"] == pytest.approx(-2 / math.sqrt(4.25), abs=1e-6)


def test_limit_defaults_to_10_and_is_at_most_256(engine: Engine) -> None:
    rng = random.Random(1)
    insert(
        engine,
        *(
            {"name": str(i), "embedding": [rng.random(), rng.random(), rng.random()]}
            for i in range(300)
        ),
    )
    assert len(search(engine, [1, 1, 1])) == 10
    assert len(search(engine, [1, 1, 1], limit=256)) == 256
    assert len(search(engine, [1, 1, 1], limit=1)) == 1
    with pytest.raises(
        VectorSearchError, match="Vector queries can fetch at most 256 results, requested 257."
    ) as error:
        search(engine, [1, 1, 1], limit=257)
    assert error.value.code == "VectorLimitTooLargeError"
    for bad in (0, -1, 2.5, "3"):
        with pytest.raises(VectorSearchError, match="`limit` must be an integer from 1 to 256"):
            search(engine, [1, 1, 1], limit=bad)


def test_a_limit_declared_v_number_is_a_whole_float_and_works(engine: Engine) -> None:
    # Convex's limit is a JS number: `limit: v.number()` (float64) passed on works there,
    # as take(2.0) does here. A NumPy integer is an integer too.
    import numpy as np

    insert(engine, *({"name": str(i), "embedding": [1.0, float(i), 0.0]} for i in range(5)))

    @action(args={"vector": v.array(v.float64()), "limit": v.number()})
    async def similar(ctx: ActionCtx, vector: list[float], limit: float) -> Any:
        return await ctx.vector_search("foods", "by_embedding", vector=vector, limit=limit)

    assert len(engine.action(similar, {"vector": [1.0, 0.0, 0.0], "limit": 3.0})) == 3
    assert len(search(engine, [1, 0, 0], limit=np.int64(2))) == 2
    assert len(search(engine, [1, 0, 0], limit=256.0)) == 5
    with pytest.raises(VectorSearchError, match="requested 257.") as error:
        search(engine, [1, 0, 0], limit=257.0)
    assert error.value.code == "VectorLimitTooLargeError"
    for bad in (True, 0.0, 1.5, math.nan, math.inf):
        with pytest.raises(VectorSearchError, match="`limit` must be an integer from 1 to 256"):
            search(engine, [1, 0, 0], limit=bad)


def test_the_exact_nearest_neighbours_are_found(engine: Engine) -> None:
    rng = random.Random(7)
    rows = [{"name": str(i), "embedding": [rng.gauss(0, 1) for _ in range(3)]} for i in range(500)]
    ids = insert(engine, *rows)
    for _ in range(20):
        query = [rng.gauss(0, 1) for _ in range(3)]
        found = search(engine, query, limit=25)
        scores = sorted((cosine(r["embedding"], query) for r in rows), reverse=True)
        assert [r["_score"] for r in found] == pytest.approx(scores[:25], abs=1e-5)
        for result in found:
            assert result["_score"] == pytest.approx(
                cosine(rows[ids.index(result["_id"])]["embedding"], query), abs=1e-5
            )


def test_query_vector_errors(engine: Engine) -> None:
    with pytest.raises(
        VectorSearchError, match=r"Expected a vector with dimensions 3, received 2\."
    ) as error:
        search(engine, [1.0, 2.0])
    assert error.value.code == "VectorDimensionsMismatch"
    with pytest.raises(VectorSearchError, match="received 4097"):
        search(engine, [1.0] * 4097)
    for bad in ([], None, "abc"):
        with pytest.raises(VectorSearchError, match="`vector` must be a non-empty Array"):
            search(engine, bad)
    with pytest.raises(VectorSearchError, match="element 1 is str"):
        search(engine, [1.0, "x", 2.0])
    with pytest.raises(VectorSearchError, match="element 0 is bool"):
        search(engine, [True, 1.0, 2.0])


def test_only_lists_of_exactly_dimensions_floats_are_indexed(db_path: Path) -> None:
    loose = define_schema(
        {
            "foods": define_table(None).vector_index(
                "by_embedding", vector_field="embedding", dimensions=3
            )
        },
        schema_validation=False,
    )
    with Engine.open(db_path, schema=loose, durability="none") as engine:
        ids = insert(
            engine,
            {"name": "ok", "embedding": [1.0, 0.0, 0.0]},
            {"name": "short", "embedding": [1.0, 0.0]},
            {"name": "long", "embedding": [1.0, 0.0, 0.0, 0.0]},
            {"name": "int64", "embedding": [1, 0, 0]},  # Convex indexes Float64 only
            {"name": "mixed", "embedding": [1.0, 0, 0.0]},
            {"name": "string", "embedding": "1,0,0"},
            {"name": "nested", "embedding": [[1.0], [0.0], [0.0]]},
            {"name": "missing"},
        )
        assert [r["_id"] for r in search(engine, [1, 0, 0], limit=50)] == [ids[0]]
        assert engine.check()["tables"]["foods"]["indexes"]["by_embedding"] == 1


def test_writes_move_the_entries(engine: Engine) -> None:
    a, b = insert(
        engine,
        {"name": "a", "cuisine": "French", "embedding": [1.0, 0.0, 0.0]},
        {"name": "b", "cuisine": "Thai", "embedding": [0.0, 1.0, 0.0]},
    )

    def french() -> list[str]:
        return [
            r["_id"] for r in search(engine, [1, 1, 0], filter=lambda q: q.eq("cuisine", "French"))
        ]

    assert french() == [a]
    engine.run(lambda ctx: ctx.db.patch(b, {"cuisine": "French"}))
    assert sorted(french()) == sorted([a, b])
    engine.run(lambda ctx: ctx.db.patch(a, {"embedding": [0.0, 0.0, 1.0]}))
    assert french() == [b, a]
    engine.run(lambda ctx: ctx.db.patch(a, {"embedding": UNSET}))
    assert french() == [b]
    engine.run(lambda ctx: ctx.db.replace(b, {"name": "b2", "embedding": [1.0, 0.0, 0.0]}))
    assert french() == []
    assert [r["_id"] for r in search(engine, [1, 0, 0])] == [b]
    engine.run(lambda ctx: ctx.db.delete(b))
    assert search(engine, [1, 0, 0]) == []
    assert engine.check()["tables"]["foods"]["indexes"]["by_embedding"] == 0


def test_filters_are_ors_of_equalities(engine: Engine) -> None:
    ids = insert(
        engine,
        {"name": "fr", "cuisine": "French", "rank": 1, "embedding": [1.0, 0.0, 0.0]},
        {"name": "th", "cuisine": "Thai", "rank": 1.0, "embedding": [1.0, 0.1, 0.0]},
        {"name": "none", "rank": 2, "embedding": [1.0, 0.2, 0.0]},
        {"name": "null", "cuisine": None, "embedding": [1.0, 0.3, 0.0]},
    )
    with Engine.open(
        engine.path, schema=food_schema(filters=("cuisine", "rank")), durability="none"
    ) as e:

        def found(fn: Any) -> list[str]:
            return [r["_id"] for r in search(e, [1, 0, 0], filter=fn)]

        assert found(lambda q: q.eq("cuisine", "Thai")) == [ids[1]]
        assert found(lambda q: q.or_(q.eq("cuisine", "Thai"), q.eq("cuisine", "French"))) == ids[:2]
        assert found(lambda q: getattr(q, "or")(q.eq("cuisine", "Thai"), q.eq("rank", 2))) == [
            ids[1],
            ids[2],
        ]
        # Equality is Convex's: 1 (Int64) is not 1.0 (Float64); a missing field is its own
        # value (UNSET), not null.
        assert found(lambda q: q.eq("rank", 1)) == [ids[0]]
        assert found(lambda q: q.eq("rank", 1.0)) == [ids[1]]
        assert found(lambda q: q.eq("cuisine", UNSET)) == [ids[2]]
        assert found(lambda q: q.eq("cuisine", None)) == [ids[3]]
        assert found(lambda q: q.eq("cuisine", "Greek")) == []
        assert e.check()["tables"]["foods"]["indexes"]["by_embedding"] == 12


def test_filter_errors_use_convex_codes(engine: Engine) -> None:
    def fails(fn: Any, code: str, text: str) -> None:
        with pytest.raises(VectorSearchError, match=text) as error:
            search(engine, [1, 0, 0], filter=fn)
        assert error.value.code == code

    fails(
        lambda q: q.eq("name", "x"),
        "IncorrectVectorFilterField",
        'Vector query against foods.by_embedding contains a filter on "name" but that field '
        "isn't indexed for filtering in `filterFields`.",
    )
    fails(
        lambda q: q.or_(*(q.eq("cuisine", str(i)) for i in range(65))),
        "TooManyElementsInVectorQueryError",
        "Vector query against foods.by_embedding has too many conditions. Max: 64 Actual: 65",
    )
    fails(
        lambda q: q.neq("cuisine", "x"),
        "InvalidVectorSearchFilter",
        "combination of `q.eq` and `q.or`",
    )
    fails(
        lambda q: q.or_("cuisine"), "InvalidVectorSearchFilter", "combination of `q.eq` and `q.or`"
    )
    fails(lambda q: None, "InvalidVectorSearchFilter", "the filter returned None")
    # 64 terms are allowed.
    search(engine, [1, 0, 0], filter=lambda q: q.or_(*(q.eq("cuisine", str(i)) for i in range(64))))


@pytest.mark.parametrize("bad", [{"cuisine": "Thai"}, "cuisine", ("cuisine", "Thai")])
def test_a_filter_that_is_not_a_function_gets_a_vector_search_error(
    engine: Engine, bad: Any
) -> None:
    with pytest.raises(VectorSearchError, match=r"expects a function of q, such as") as error:
        search(engine, [1, 0, 0], filter=bad)
    assert error.value.code == "InvalidVectorSearchFilter"
    assert repr(bad)[:20] in str(error.value)


def test_a_missing_filter_method_is_an_attribute_error_too(engine: Engine) -> None:
    # hasattr() (and getattr with a default, debuggers, mocks) rely on AttributeError:
    # q.neq must still say why with Convex's code, and hasattr(q, "neq") be False.
    seen: dict[str, Any] = {}

    def probe(q: Any) -> Any:
        seen["hasattr"] = hasattr(q, "neq"), hasattr(q, "__array__"), hasattr(q, "or")
        seen["default"] = getattr(q, "and_", None)
        return q.eq("cuisine", "Thai")

    search(engine, [1, 0, 0], filter=probe)
    assert seen == {"hasattr": (False, False, True), "default": None}
    with pytest.raises(VectorSearchError, match="combination of `q.eq` and `q.or`") as error:
        search(engine, [1, 0, 0], filter=lambda q: q.neq("cuisine", "x"))
    assert error.value.code == "InvalidVectorSearchFilter"
    assert isinstance(error.value, AttributeError)


def test_unknown_and_wrong_indexes(engine: Engine) -> None:
    with pytest.raises(
        IndexNotFound,
        match=r"Index foods.nope not found\. Vector indexes of this table: by_embedding",
    ):
        search(engine, [1, 0, 0], index="nope")
    with pytest.raises(
        VectorSearchError, match="Index foods.by_name is not a vector index"
    ) as error:
        search(engine, [1, 0, 0], index="by_name")
    assert error.value.code == "IndexNotAVectorIndexError"

    async def other_table(ctx: Any) -> Any:
        return await ctx.vector_search("drinks", "by_embedding", vector=[1, 0, 0])

    with pytest.raises(IndexNotFound, match="Index drinks.by_embedding not found"):
        engine.action(other_table)
    with pytest.raises(IndexNotFound, match="It is a vector index: search it from an action"):
        engine.query(
            lambda ctx: ctx.db.query("foods").with_index("by_embedding", lambda q: q).collect()
        )
    with pytest.raises(IndexNotFound, match="not a search index. It is a vector index"):
        engine.query(
            lambda ctx: (
                ctx.db.query("foods")
                .with_search_index("by_embedding", lambda q: q.search("name", "x"))
                .collect()
            )
        )
    with pytest.raises(AttributeError, match="vector search runs in actions only"):
        engine.query(lambda ctx: ctx.vector_search)
    with pytest.raises(AttributeError, match="vector search runs in actions only"):
        engine.run(lambda ctx: ctx.vector_search)


def test_convex_query_dict_form(engine: Engine) -> None:
    ids = insert(engine, {"name": "a", "cuisine": "Thai", "embedding": [1.0, 0.0, 0.0]})

    async def body(ctx: Any) -> Any:
        return await ctx.vector_search(
            "foods",
            "by_embedding",
            {"vector": [1, 0, 0], "limit": 5, "filter": lambda q: q.eq("cuisine", "Thai")},
        )

    assert [r["_id"] for r in engine.action(body)] == ids

    async def both(ctx: Any) -> Any:
        return await ctx.vector_search("foods", "by_embedding", {"vector": [1, 0, 0]}, limit=2)

    with pytest.raises(VectorSearchError, match="not both"):
        engine.action(both)

    async def typo(ctx: Any) -> Any:
        return await ctx.vector_search("foods", "by_embedding", {"vectors": [1, 0, 0]})

    with pytest.raises(VectorSearchError, match=r"unknown query keys \['vectors'\]"):
        engine.action(typo)


def test_ties_put_the_larger_id_first_and_nan_last(engine: Engine) -> None:
    ids = insert(
        engine,
        *({"name": str(i), "embedding": [1.0, 1.0, 0.0]} for i in range(5)),
        {"name": "nan", "embedding": [math.nan, 1.0, 0.0]},
        {"name": "zero", "embedding": [0.0, 0.0, 0.0]},
    )
    from engine.ids import decode_id

    found = search(engine, [1, 1, 0])
    tied = [r["_id"] for r in found[:5]]
    assert tied == sorted(ids[:5], key=lambda i: decode_id(i)[1], reverse=True)
    assert found[5]["_id"] == ids[6] and found[5]["_score"] == 0.0  # a zero vector scores 0
    assert found[6]["_id"] == ids[5] and math.isnan(found[6]["_score"])


def test_values_out_of_float32_range_become_infinite(engine: Engine) -> None:
    (big,) = insert(engine, {"name": "big", "embedding": [1e300, 0.0, 0.0]})
    (result,) = search(engine, [1, 0, 0])
    assert result["_id"] == big  # stored as float32 inf, as Rust's `as f32`; its norm is inf
    assert math.isnan(result["_score"])


def test_a_mutation_that_raises_leaves_no_entries(engine: Engine) -> None:
    def body(ctx: Any) -> None:
        ctx.db.insert("foods", {"name": "x", "embedding": [1.0, 0.0, 0.0]})
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        engine.run(body)
    assert search(engine, [1, 0, 0]) == []
    engine.check()


# -- lifecycle -----------------------------------------------------------------


def test_adding_a_vector_index_backfills_and_marks_format_6(db_path: Path) -> None:
    plain = define_schema({"foods": define_table(FOOD)})
    with Engine.open(db_path, schema=plain, durability="none") as engine:
        ids = insert(
            engine,
            {"name": "a", "cuisine": "x", "embedding": [1.0, 0.0, 0.0]},
            {"name": "b", "embedding": [0.0, 1.0, 0.0]},
        )
    assert _format(db_path) == b"2"
    with Engine.open(db_path, schema=food_schema(), durability="none") as engine:
        assert [r["_id"] for r in search(engine, [1, 0.1, 0])] == ids
        assert engine.check()["tables"]["foods"]["indexes"]["by_embedding"] == 4
    assert _format(db_path) == b"6"
    # Another dimension count is another index: rebuilt (nothing has 4 floats).
    with Engine.open(db_path, schema=food_schema(dimensions=4), durability="none") as engine:
        assert search(engine, [1, 0, 0, 0]) == []
        engine.check()
    # Dropped: its entries go with it.
    with Engine.open(db_path, schema=plain, durability="none") as engine:
        report = engine.check()
        assert "by_embedding" not in report["tables"]["foods"]["indexes"]
        with engine._db.storage.read() as rtxn:
            assert rtxn.stat(engine._db.storage.indexes)["entries"] == 2  # by_creation_time


def test_entries_survive_reopening_and_writes_of_a_handle_opened_without_the_schema(
    db_path: Path,
) -> None:
    with Engine.open(db_path, schema=food_schema(), durability="none") as engine:
        (a,) = insert(engine, {"name": "a", "embedding": [1.0, 0.0, 0.0]})
    with Engine.open(db_path, durability="none") as other:  # the stored catalog still holds it
        (b,) = insert(other, {"name": "b", "embedding": [0.0, 1.0, 0.0]})
        other.run(lambda ctx: ctx.db.delete(a))
        other.check()
    with Engine.open(db_path, schema=food_schema(), durability="none") as engine:
        assert [r["_id"] for r in search(engine, [0, 1, 0])] == [b]


def _format(db_path: Path) -> bytes:
    env = lmdb.open(str(db_path), max_dbs=8, readonly=True, lock=False)
    try:
        meta = env.open_db(b"meta")
        with env.begin() as txn:
            return bytes(txn.get(b"format", db=meta))
    finally:
        env.close()


@pytest.mark.parametrize("damage", ["delete main", "change vector", "stray entry", "delete filter"])
def test_check_finds_damaged_vector_entries(engine: Engine, damage: str) -> None:
    (a,) = insert(engine, {"name": "a", "cuisine": "x", "embedding": [1.0, 0.0, 0.0]})
    engine.check()
    storage = engine._db.storage
    index = engine._db.catalog_cache[1].tables["foods"].indexes["by_embedding"]
    from engine.ids import decode_id

    internal_id = decode_id(a)[1]
    main = index.prefix + b"\x00" + internal_id
    with storage.env.begin(write=True) as txn:
        value = txn.get(main, db=storage.indexes)
        if damage == "delete main":
            txn.delete(main, db=storage.indexes)
        elif damage == "change vector":
            txn.put(main, b"\x00\x00\x00\x40" + value[4:], db=storage.indexes)
        elif damage == "stray entry":
            txn.put(index.prefix + b"\x00" + bytes(16), value, db=storage.indexes)
        else:
            cursor = txn.cursor(db=storage.indexes)
            assert cursor.set_range(index.prefix + b"\x01")
            cursor.delete()
    with pytest.raises(CorruptionError, match="vector index"):
        engine.check()


# -- from the review -----------------------------------------------------------


def test_repeated_filter_values_count_once_and_fields_are_checked_first(engine: Engine) -> None:
    # Convex merges each field's values into a set and counts the distinct ones.
    search(engine, [1, 0, 0], filter=lambda q: q.or_(*(q.eq("cuisine", "x") for _ in range(65))))
    with pytest.raises(VectorSearchError, match="isn't indexed for filtering") as error:
        search(
            engine,
            [1, 0, 0],
            filter=lambda q: q.or_(*(q.eq("cuisine", str(i)) for i in range(65)), q.eq("name", 1)),
        )
    assert error.value.code == "IncorrectVectorFilterField"


def test_vectors_shorter_than_float32_epsilon_are_not_scaled(engine: Engine) -> None:
    # Qdrant's cosine_preprocess leaves a vector whose squared length is below
    # f32::EPSILON as it is: [1e-4, 0, 0] scores ~1e-4 against [1, 0, 0], not 1.
    insert(engine, {"name": "tiny", "embedding": [1e-4, 0.0, 0.0]})
    (result,) = search(engine, [1, 0, 0])
    assert result["_score"] == pytest.approx(1e-4, rel=1e-3)
    (result,) = search(engine, [1e-4, 0, 0])  # the query too
    assert result["_score"] == pytest.approx(1e-8, rel=1e-3)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_query_vector_must_be_finite(engine: Engine, bad: float) -> None:
    # Convex's JSON turns NaN and Infinity into null, which its f32 vector refuses.
    with pytest.raises(VectorSearchError, match="element 1 is not finite") as error:
        search(engine, [1.0, bad, 0.0])
    assert error.value.code == "InvalidVectorSearch"


def test_staged_vector_indexes_are_refused() -> None:
    with pytest.raises(SchemaValidationError, match="staged indexes"):
        define_table(FOOD).vector_index(
            "v", {"vectorField": "embedding", "dimensions": 3, "staged": True}
        )
    define_table(FOOD).vector_index(
        "v", {"vectorField": "embedding", "dimensions": 3, "staged": False}
    )


def test_a_query_vector_over_4096_is_reported_as_convex_does(engine: Engine) -> None:
    with pytest.raises(
        VectorSearchError, match=r"Expected a vector with dimensions 4096, received 5000\."
    ) as error:
        search(engine, [1.0] * 5000, limit=300)  # checked before the limit, as Convex
    assert error.value.code == "VectorDimensionsMismatch"


def test_reordering_filter_fields_keeps_the_index(db_path: Path) -> None:
    # Convex keeps filter fields as a set: another order is the same index (no rebuild).
    def stored(engine: Engine) -> Any:
        with engine._db.storage.read() as rtxn:
            return engine._db.catalog_at(rtxn).tables["foods"].indexes["by_embedding"]

    with Engine.open(
        db_path, schema=food_schema(filters=("cuisine", "rank")), durability="none"
    ) as e:
        before = stored(e)
    with Engine.open(
        db_path, schema=food_schema(filters=("rank", "cuisine")), durability="none"
    ) as e:
        assert stored(e) == before
        e.check()
    with Engine.open(db_path, schema=food_schema(filters=("rank",)), durability="none") as e:
        assert stored(e).number != before.number


def test_a_damaged_entry_met_by_a_search_is_corruption(engine: Engine) -> None:
    (a,) = insert(engine, {"name": "a", "embedding": [1.0, 0.0, 0.0]})
    storage = engine._db.storage
    index = engine._db.catalog_cache[1].tables["foods"].indexes["by_embedding"]
    from engine.ids import decode_id

    main = index.prefix + b"\x00" + decode_id(a)[1]
    with storage.env.begin(write=True) as txn:
        txn.put(main, txn.get(main, db=storage.indexes)[:-3], db=storage.indexes)
    with pytest.raises(CorruptionError, match="vector index entry .* holds 25 bytes"):
        search(engine, [1, 0, 0])


def test_numpy_query_vectors_are_accepted(engine: Engine) -> None:
    import numpy as np

    (a,) = insert(engine, {"name": "a", "embedding": [1.0, 0.0, 0.0]})
    for query in (np.array([1.0, 0.0, 0.0], dtype=np.float32), [np.float32(1), np.int64(0), 0.0]):
        assert [r["_id"] for r in search(engine, query)] == [a]
    with pytest.raises(VectorSearchError, match="element 0 is bool"):
        search(engine, [np.bool_(True), 0.0, 0.0])


def test_searches_run_on_kept_threads_and_again_in_a_forked_child(db_path: Path) -> None:
    import os
    import threading

    with Engine.open(db_path, schema=food_schema(), durability="none") as engine:
        insert(engine, {"name": "a", "embedding": [1.0, 0.0, 0.0]})
        assert len(search(engine, [1, 0, 0])) == 1
        names = {t.name for t in threading.enumerate()}
        assert any(name.startswith("convexlite-vectors") for name in names)
    pid = os.fork()
    if pid == 0:  # the child: the parent's search threads are not here; new ones are made
        code = 1
        try:
            with Engine.open(db_path, durability="none") as child:
                code = 0 if len(search(child, [1, 0, 0])) == 1 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


# -- from the second review ------------------------------------------------------


def test_a_search_started_inside_another_on_its_thread_does_not_change_its_results(
    engine: Engine, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A signal handler or a finalizer may search while a search on the same thread has
    # its candidates in the thread's scratch buffer: the nested one must not overwrite them.
    from engine import vectors

    rng = random.Random(5)
    rows = [{"name": str(i), "embedding": [rng.gauss(0, 1) for _ in range(3)]} for i in range(300)]
    insert(engine, *rows)
    other_schema = define_schema(
        {
            "foods": define_table().vector_index(
                "by_embedding", vector_field="embedding", dimensions=3
            )
        },
        schema_validation=False,
    )
    with Engine.open(db_path.parent / "other", schema=other_schema, durability="none") as other:
        insert(other, *({"embedding": [float(i), 1.0, -1.0]} for i in range(400)))
        original = vectors._candidates

        nested_once: list[None] = []

        def with_a_nested_search(*args: Any) -> Any:
            found = original(*args)
            if not nested_once:  # the nested search's own call goes straight through
                nested_once.append(None)
                vectors.vector_search(other._db, "foods", "by_embedding", [1, 0, 0], limit=5)
            return found

        expected = vectors.vector_search(engine._db, "foods", "by_embedding", [1, 2, 3], limit=20)
        monkeypatch.setattr(vectors, "_candidates", with_a_nested_search)
        nested = vectors.vector_search(engine._db, "foods", "by_embedding", [1, 2, 3], limit=20)
    assert nested == expected


def test_scores_do_not_use_threaded_blas() -> None:
    # Forking while OpenBLAS's threads ran a search's matrix product hung the search for
    # ever (its fork handler tears the pool down): scores come from einsum, not BLAS.
    import inspect

    from engine import vectors

    source = inspect.getsource(vectors.vector_search)
    assert " @ " not in source and "np.dot" not in source and "matmul" not in source


def test_a_child_forked_during_searches_opens_the_folder(db_path: Path) -> None:
    # A search kept its (ended) read txn referenced through its NumPy work: a child forked
    # then could not let go of the parent's environment, and Engine.open refused the folder.
    import os
    import threading

    from engine import vectors

    rng = random.Random(3)
    wide = define_schema(
        {"docs": define_table().vector_index("by_vec", vector_field="vec", dimensions=256)},
        schema_validation=False,
    )
    with Engine.open(db_path, schema=wide, durability="none") as engine:
        for _ in range(6):
            rows = [{"vec": [rng.random() for _ in range(256)]} for _ in range(500)]
            engine.run(lambda ctx, rows=rows: [ctx.db.insert("docs", r) for r in rows])
        query = [rng.random() for _ in range(256)]
        stop = threading.Event()

        def searcher() -> None:
            while not stop.is_set():
                vectors.vector_search(engine._db, "docs", "by_vec", query, limit=10)

        threads = [threading.Thread(target=searcher) for _ in range(2)]
        for thread in threads:
            thread.start()
        failures = 0
        try:
            for _ in range(10):
                time.sleep(rng.uniform(0, 0.02))
                pid = os.fork()
                if pid == 0:
                    code = 3
                    try:
                        with Engine.open(db_path, durability="none"):
                            code = 0
                    finally:
                        os._exit(code)
                _, status = os.waitpid(pid, 0)
                failures += os.waitstatus_to_exitcode(status) != 0
        finally:
            stop.set()
            for thread in threads:
                thread.join()
    assert failures == 0


def test_a_kept_buffer_grows_to_what_a_search_needs_within_the_cap(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Doubling past the cap threw the buffer away although the search needed less: every
    # such search faulted its pages in again.
    import threading

    from engine import vectors

    insert(
        engine,
        *({"name": str(i), "cuisine": "x", "embedding": [1.0, 0.0, float(i)]} for i in range(3000)),
    )
    monkeypatch.setattr(vectors, "_KEEP", 100_000)  # 3,000 entries × 28 bytes = 84,000
    kept: list[int] = []

    def search_on_a_new_thread() -> None:
        vectors.vector_search(engine._db, "foods", "by_embedding", [1, 0, 0])
        kept.append(len(vectors._scratch.vectors))

    thread = threading.Thread(target=search_on_a_new_thread)
    thread.start()
    thread.join()
    assert 84_000 <= kept[0] <= 100_000


def test_a_query_vector_past_float_range_is_refused(engine: Engine) -> None:
    from fractions import Fraction

    for bad in (10**400, Fraction(10**400)):
        with pytest.raises(VectorSearchError, match="element 0 is out of the float range") as error:
            search(engine, [bad, 0, 0])
        assert error.value.code == "InvalidVectorSearch"


def test_the_filter_sees_the_actions_context_variables(engine: Engine) -> None:
    import contextvars

    tenant: contextvars.ContextVar[str | None] = contextvars.ContextVar("tenant", default=None)
    seen: list[str | None] = []
    insert(engine, {"name": "a", "cuisine": "acme", "embedding": [1.0, 0.0, 0.0]})

    async def body(ctx: Any) -> Any:
        tenant.set("acme")

        def only_tenant(q: Any) -> Any:
            seen.append(tenant.get())
            return q.eq("cuisine", tenant.get())

        return await ctx.vector_search(
            "foods", "by_embedding", vector=[1, 0, 0], filter=only_tenant
        )

    assert len(engine.action(body)) == 1
    assert seen == ["acme"]


def test_a_mutation_that_raced_the_index_being_added_is_re_run_with_its_entries(
    db_path: Path,
) -> None:
    # A committing mutation computes its documents' vector entries from its snapshot's
    # indexes (vectors.prepare): one whose snapshot predates the index must not commit
    # without them. Its table changed, so it conflicts and runs again on the new catalog.
    import threading

    plain = define_schema({"foods": define_table(FOOD)})
    with Engine.open(db_path, schema=plain, durability="none") as engine:
        insert(engine, {"name": "first", "embedding": [0.0, 1.0, 0.0]})
        started, changed = threading.Event(), threading.Event()
        runs: list[None] = []

        def body(ctx: Any) -> str:
            runs.append(None)
            ctx.db.query("foods").first()  # a snapshot that sees the table without the index
            if len(runs) == 1:
                started.set()
                changed.wait(10)
            return ctx.db.insert("foods", {"name": "raced", "embedding": [1.0, 0.0, 0.0]})

        result: list[str] = []
        writer = threading.Thread(target=lambda: result.append(engine.run(body)))
        writer.start()
        assert started.wait(10)
        Engine.open(db_path, schema=food_schema(), durability="none").close()  # adds it
        changed.set()
        writer.join()
        assert len(runs) == 2
    with Engine.open(db_path, schema=food_schema(), durability="none") as engine:
        assert [r["_id"] for r in search(engine, [1, 0, 0], limit=1)] == result
        engine.check()


def test_a_vector_search_on_a_closed_engine_raises_the_closed_error(db_path: Path) -> None:
    # Found by the actions hunt: ctx.vector_search read in an LMDB txn of its own that
    # neither checked that the engine was closing nor was counted as a running call,
    # so an action searching after close() got StorageError ("LMDB error at ...: Attempt
    # to operate on closed/deleted/dropped object"), where its ctx.run_query gets the
    # engine's closed error.
    import asyncio

    from engine.contexts import ActionCtx
    from engine.errors import EngineError, closed_error

    engine = Engine.open(db_path, schema=food_schema(), durability="none")
    insert(engine, {"name": "a", "embedding": [1.0, 0.0, 0.0]})
    ctx = ActionCtx(engine._runtime, None)  # an action still running when the engine closes
    engine.close()
    with pytest.raises(EngineError) as raised:
        asyncio.run(ctx.vector_search("foods", "by_embedding", vector=[1.0, 0.0, 0.0]))
    assert type(raised.value) is EngineError
    assert str(raised.value) == str(closed_error())


def test_a_search_holds_one_reader_slot_and_none_while_it_scores(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ctx.vector_search ran its search inside a read-only ``db.run`` only to be counted
    as a running call: that opened a read transaction it never used, held beside the
    search's own and through the scoring (two LMDB reader slots per search, and a
    snapshot held while NumPy worked, which the search lets go of so that a fork then
    can reopen the folder). Now the search's own snapshot is the only one."""
    from engine import vectors

    insert(
        engine,
        *({"name": f"f{i}", "cuisine": "x", "embedding": [1.0, float(i), 2.0]} for i in range(5)),
    )
    readers = ReaderCount(engine, monkeypatch)
    held_while_scoring: list[int] = []
    real_scores = vectors._scores

    def scores(*args: Any) -> Any:
        held_while_scoring.append(readers.open)
        return real_scores(*args)

    monkeypatch.setattr(vectors, "_scores", scores)
    assert len(search(engine, [1.0, 0.0, 0.0], limit=3)) == 3
    assert readers.peak == 1 and held_while_scoring == [0] and readers.open == 0


def test_a_filter_that_calls_the_engine_is_refused_as_before(engine: Engine) -> None:
    """The search's filter runs inside the search's snapshot. Under ``db.run`` its thread
    counted as running a function, so an engine call from the filter was refused (it
    would open a second snapshot, and wait for ever on a map resize waiting for the
    search's). ``Database.counted`` dropped that mark: the call ran. Found in review."""
    insert(engine, {"name": "a", "cuisine": "x", "embedding": [1.0, 0.0, 0.0]})

    def calls_the_engine(q: Any) -> Any:
        engine.query(lambda ctx: ctx.db.query("foods").collect())
        return q.eq("cuisine", "x")

    with pytest.raises(EngineError, match="from inside a running query or mutation"):
        search(engine, [1.0, 0.0, 0.0], filter=calls_the_engine)
    assert len(search(engine, [1.0, 0.0, 0.0], filter=lambda q: q.eq("cuisine", "x"))) == 1
