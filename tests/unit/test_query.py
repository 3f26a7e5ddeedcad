"""engine.query and engine.filters: index ranges, ordering, filters, terminals."""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Any

import pytest

from engine import (
    UNSET,
    Engine,
    EvalError,
    IndexNotFound,
    InvalidIndexRange,
    InvalidTable,
    ValidationError,
    define_schema,
    define_table,
    v,
)
from engine.filters import compile_expression, compile_filters, evaluate, passes, predicate

SCHEMA = define_schema(
    {
        "people": define_table(
            {
                "name": v.string(),
                "age": v.optional(v.union(v.int64(), v.float64(), v.null())),
                "city": v.optional(v.string()),
            }
        )
        .index("by_city_age", ["city", "age"])
        .index("by_age", ["age"]),
    },
    schema_validation=False,
)

PEOPLE = [
    {"name": "ann", "age": 30, "city": "oslo"},
    {"name": "bob", "age": 25, "city": "oslo"},
    {"name": "cid", "age": 41, "city": "rome"},
    {"name": "dan", "city": "rome"},  # age missing
    {"name": "eve", "age": None, "city": "oslo"},
    {"name": "fay", "age": 2.5, "city": "oslo"},  # floats sort after every int
    {"name": "gus", "age": 30, "city": "paris"},
]


@pytest.fixture
def people(db_path: Path):  # type: ignore[no-untyped-def]
    with Engine.open(db_path, schema=SCHEMA, durability="none") as engine:
        engine.run(lambda ctx: [ctx.db.insert("people", dict(p)) for p in PEOPLE])
        yield engine
        engine.check()


def names(engine: Engine, build) -> list[str]:  # type: ignore[no-untyped-def]
    return [d["name"] for d in engine.run(lambda ctx: build(ctx.db.query("people")).collect())]


def test_default_order_is_creation_time(people: Engine) -> None:
    assert names(people, lambda q: q) == [p["name"] for p in PEOPLE]
    assert names(people, lambda q: q.order("desc")) == [p["name"] for p in PEOPLE][::-1]


def test_index_order_follows_convex_total_order(people: Engine) -> None:
    # missing < null < int64 < float64
    assert names(people, lambda q: q.with_index("by_age")) == [
        "dan",
        "eve",
        "bob",
        "ann",
        "gus",
        "cid",
        "fay",
    ]


def test_equality_prefix_then_bounds(people: Engine) -> None:
    assert names(people, lambda q: q.with_index("by_city_age", lambda r: r.eq("city", "oslo"))) == [
        "eve",
        "bob",
        "ann",
        "fay",
    ]
    assert names(
        people,
        lambda q: q.with_index(
            "by_city_age", lambda r: r.eq("city", "oslo").gt("age", 25).lte("age", 30)
        ),
    ) == ["ann"]
    assert names(
        people, lambda q: q.with_index("by_city_age", lambda r: r.eq("city", "oslo").gte("age", 25))
    ) == ["bob", "ann", "fay"]
    assert names(
        people, lambda q: q.with_index("by_city_age", lambda r: r.eq("city", "oslo").lt("age", 30))
    ) == ["eve", "bob"]
    assert names(people, lambda q: q.with_index("by_age", lambda r: r.eq("age", UNSET))) == ["dan"]
    assert names(people, lambda q: q.with_index("by_age", lambda r: r.gt("age", UNSET)))[0] == "eve"
    assert names(
        people, lambda q: q.with_index("by_city_age", lambda r: r.eq("city", "oslo").eq("age", 30))
    ) == ["ann"]


def test_descending_index_range(people: Engine) -> None:
    assert names(
        people, lambda q: q.with_index("by_city_age", lambda r: r.eq("city", "oslo")).order("desc")
    ) == ["fay", "ann", "bob", "eve"]


@pytest.mark.parametrize(
    ("build", "code"),
    [
        (lambda r: r.eq("age", 1), "InvalidIndexRange"),  # skips city
        # Convex's split() checks a bound's slot before its field: two lower bounds are
        # AlreadyDefinedBound even on two fields; a lower and an upper on two fields not
        (lambda r: r.gt("city", "a").gt("age", 1), "AlreadyDefinedBound"),
        (lambda r: r.lt("city", "a").lte("age", 1), "AlreadyDefinedBound"),
        (lambda r: r.gt("city", "a").lt("age", 1), "BoundsOnMultipleFields"),
        # every split() error comes before FieldNotInIndex and the order check
        (lambda r: r.eq("nope", 1).eq("nope", 2), "AlreadyDefinedBound"),
        (lambda r: r.gt("nope", 1).eq("nope", 2), "AlreadyDefinedBound"),
        (lambda r: r.eq("age", 1).gt("nope", 1).lt("zzz", 2), "BoundsOnMultipleFields"),
        (lambda r: r.eq("age", 1).eq("nope", 1), "FieldNotInIndex"),
        (lambda r: r.gt("city", "a").gte("city", "b"), "AlreadyDefinedBound"),
        (lambda r: r.eq("city", "a").eq("city", "b"), "AlreadyDefinedBound"),
        (lambda r: r.eq("city", "a").gt("city", "b"), "AlreadyDefinedBound"),
        (lambda r: r.eq("nope", 1), "FieldNotInIndex"),
        (lambda r: r.gt("city", "a").eq("age", 1), "InvalidIndexRange"),  # bound before eq
    ],
)
def test_range_grammar_errors(people: Engine, build, code: str) -> None:  # type: ignore[no-untyped-def]
    for _ in range(2):  # checked shapes are remembered; broken ones must raise every time
        with pytest.raises(InvalidIndexRange) as caught:
            people.run(
                lambda ctx: ctx.db.query("people").with_index("by_city_age", build).collect()
            )
        assert caught.value.code == code


def test_range_errors_use_convex_wording(people: Engine) -> None:
    # crates/common/src/query.rs: already_defined_bound_error, bounds_on_multiple_fields_error,
    # field_not_in_index_error, invalid_index_range
    def message(build: Any) -> str:
        with pytest.raises(InvalidIndexRange) as caught:
            people.run(
                lambda ctx: ctx.db.query("people").with_index("by_city_age", build).collect()
            )
        return str(caught.value)

    assert message(lambda r: r.gt("city", "a").gt("age", 1)) == (
        'Already defined lower bound in index range. Can\'t add "age" > 1.'
    )
    assert message(lambda r: r.eq("city", "a").eq("city", "b")) == (
        'Already defined equality bound in index range. Can\'t add "city" == "a".'
    )
    assert message(lambda r: r.gt("city", "a").eq("city", "b")) == (
        'Already defined inequality bound in index range. Can\'t add "city" == "b".'
    )
    assert message(lambda r: r.gt("city", "a").lt("age", 1)) == (
        "Upper and lower bounds in `range` can only be applied to a single index field. "
        "This query against index people.by_city_age attempted to set a range bound on both "
        '"city" and "age". Consider using `filter` instead. '
        "See https://docs.convex.dev/using/indexes for more info."
    )
    assert message(lambda r: r.eq("nope", 1)) == (
        'The index range included a comparison with "nope", but people.by_city_age with '
        'fields ["city", "age", "_creationTime"] doesn\'t index this field. '
        "For more information see https://docs.convex.dev/using/indexes."
    )
    assert message(lambda r: r.eq("age", 1)) == (
        "Tried to query index people.by_city_age but the query didn't use the index fields "
        'in order.\nIndex fields: ["city", "age", "_creationTime"]\nQuery fields: ["age"]\n'
        'First incorrect field: "age"\n'
        "For more information see https://docs.convex.dev/using/indexes."
    )


def test_a_remembered_range_shape_takes_new_values(people: Engine) -> None:
    from engine.ordering import compare

    def names(city: str, low: int) -> list[str]:
        return sorted(
            d["name"]
            for d in people.run(
                lambda ctx: (
                    ctx.db.query("people")
                    .with_index("by_city_age", lambda r: r.eq("city", city).gte("age", low))
                    .collect()
                )
            )
        )

    everyone = people.run(lambda ctx: ctx.db.query("people").collect())
    for city in sorted({d["city"] for d in everyone if isinstance(d.get("city"), str)}):
        for low in (0, 30, 40):
            assert names(city, low) == sorted(
                d["name"]
                for d in everyone
                if d.get("city") == city and "age" in d and compare(d["age"], low) >= 0
            )


def test_unknown_index(people: Engine) -> None:
    with pytest.raises(IndexNotFound, match="people.by_nothing not found"):
        people.run(lambda ctx: ctx.db.query("people").with_index("by_nothing").collect())


def test_filters(people: Engine) -> None:
    assert names(people, lambda q: q.filter(lambda f: f.eq(f.field("city"), "rome"))) == [
        "cid",
        "dan",
    ]
    assert names(
        people,
        lambda q: q.filter(
            lambda f: f.and_(f.eq(f.field("city"), "oslo"), f.gte(f.field("age"), 30))
        ),
    ) == ["ann", "fay"]
    assert names(
        people,
        lambda q: q.filter(
            lambda f: f.or_(f.eq(f.field("name"), "ann"), f.not_(f.neq(f.field("name"), "gus")))
        ),
    ) == ["ann", "gus"]
    assert names(people, lambda q: q.filter(lambda f: f.eq(f.field("age"), UNSET))) == ["dan"]
    # Int64 and Float64 never compare equal
    assert names(people, lambda q: q.filter(lambda f: f.eq(f.field("age"), 30.0))) == []
    # and_ short-circuits: only Int64 ages (above null, below every float) reach mod
    assert names(
        people,
        lambda q: q.filter(
            lambda f: f.and_(
                f.gt(f.field("age"), None),
                f.lt(f.field("age"), float("-inf")),
                f.eq(f.mod(f.field("age"), 2), 1),
            )
        ),
    ) == ["bob", "cid"]


def test_filter_arithmetic_errors(people: Engine) -> None:
    with pytest.raises(EvalError, match=r"Cannot add .* \(type Int64\) and .* \(type Float64\)"):
        people.run(
            lambda ctx: (
                ctx.db.query("people")
                .filter(lambda f: f.eq(f.add(f.field("age"), 0.5), 1.0))
                .collect()
            )
        )
    with pytest.raises(EvalError, match=r"^Cannot divide \d+ by zero$"):
        people.run(
            lambda ctx: (
                ctx.db.query("people").filter(lambda f: f.eq(f.div(f.field("age"), 0), 1)).collect()
            )
        )
    with pytest.raises(EvalError, match="the result is out of range for Int64"):
        people.run(
            lambda ctx: (
                ctx.db.query("people")
                .filter(lambda f: f.eq(f.mul(f.field("age"), 2**62), 1))
                .collect()
            )
        )
    with pytest.raises(EvalError, match="as a Boolean"):
        people.run(
            lambda ctx: (
                ctx.db.query("people").filter(lambda f: f.and_(f.field("name"), True)).collect()
            )
        )
    with pytest.raises(EvalError, match=r"^Cannot use value \d+ \(type Int64\) as a Boolean$"):
        people.run(lambda ctx: ctx.db.query("people").filter(lambda f: f.field("age")).collect())


def test_a_filter_function_that_returns_nothing_is_refused_when_built(people: Engine) -> None:
    # A `def` that builds the expression but forgets `return` (Convex's types refuse a
    # predicate returning undefined at compile time): named at .filter(), not a runtime
    # "Cannot use value null" per document, and not silently nothing on an empty table.
    def unfinished(q: Any) -> None:
        q.eq(q.field("name"), "ada")

    with pytest.raises(EvalError, match=r"returned None.*return q\.eq"):
        people.run(lambda ctx: ctx.db.query("people").filter(unfinished).collect())
    with pytest.raises(EvalError, match="returned None"):
        people.run(lambda ctx: ctx.db.query("nothing_here").filter(unfinished).collect())
    # a literal null elsewhere in an expression is still a value
    assert names(people, lambda q: q.filter(lambda f: f.eq(f.field("nope"), None))) == []


def test_float_arithmetic_follows_ieee(people: Engine) -> None:
    assert names(
        people,
        lambda q: q.filter(
            lambda f: f.and_(
                f.gte(f.field("age"), float("-inf")), f.eq(f.div(f.field("age"), 0.0), float("inf"))
            )
        ),
    ) == ["fay"]
    assert names(
        people,
        lambda q: q.filter(
            lambda f: f.and_(
                f.gte(f.field("age"), float("-inf")), f.eq(f.mod(f.field("age"), 2.0), 0.5)
            )
        ),
    ) == ["fay"]


def test_terminals(people: Engine) -> None:
    def run(fn):  # type: ignore[no-untyped-def]
        return people.run(lambda ctx: fn(ctx.db.query("people")))

    assert [d["name"] for d in run(lambda q: q.take(2))] == ["ann", "bob"]
    assert run(lambda q: q.take(0)) == []
    assert run(lambda q: q.first())["name"] == "ann"
    assert run(lambda q: q.filter(lambda f: f.eq(f.field("name"), "zed")).first()) is None
    assert run(lambda q: q.filter(lambda f: f.eq(f.field("name"), "gus")).unique())["name"] == "gus"
    with pytest.raises(ValidationError, match="unique\\(\\) query returned more than one result"):
        run(lambda q: q.unique())
    with pytest.raises(ValidationError, match="non-negative integer"):
        run(lambda q: q.take(-1))
    assert [d["name"] for d in run(lambda q: list(q))][:1] == ["ann"]
    with pytest.raises(ValidationError, match="order at most once"):
        run(lambda q: q.order("asc").order("desc"))


def test_take_accepts_a_whole_float_as_convex_does(people: Engine) -> None:
    """Convex's n is a JS number checked with Number.isInteger, so a limit that came in
    as a v.number() argument (a float here) works; fractions, NaN and bools do not."""

    def take(n: Any) -> Any:
        return people.run(lambda ctx: ctx.db.query("people").take(n))

    assert [d["name"] for d in take(2.0)] == ["ann", "bob"]
    assert take(0.0) == [] and take(-0.0) == []
    for bad in (2.5, -1.0, float("nan"), float("inf"), True, "2"):
        with pytest.raises(ValidationError, match="Arg 1 `n` to `take` must be a non-negative"):
            take(bad)


def test_take_accepts_a_numpy_integer_as_vector_search_does(people: Engine) -> None:
    """A count computed with NumPy (np.int64) is an integer: take() refused it with
    "must be a non-negative integer, got np.int64(2)", while ctx.vector_search's limit
    takes it (engine.vectors._limit)."""
    import numpy as np

    def take(n: Any) -> Any:
        return people.run(lambda ctx: ctx.db.query("people").take(n))

    assert [d["name"] for d in take(np.int64(2))] == ["ann", "bob"]
    assert [d["name"] for d in take(np.uint8(1))] == ["ann"]
    assert take(np.int32(0)) == []
    for bad in (np.int64(-1), np.bool_(True)):
        with pytest.raises(ValidationError, match="Arg 1 `n` to `take` must be a non-negative"):
            take(bad)


def test_missing_table_reads_nothing(people: Engine) -> None:
    assert people.run(lambda ctx: ctx.db.query("nothing").collect()) == []


@pytest.mark.parametrize(
    ("index", "build", "code"),
    [
        ("by_creation_time", lambda q: q.eq("x", 1), "FieldNotInIndex"),
        ("by_id", lambda q: q.gt("_id", "a").gt("_id", "b"), "AlreadyDefinedBound"),
        ("by_creation_time", lambda q: q.eq("_id", "a"), "InvalidIndexRange"),
        (
            "by_creation_time",
            lambda q: q.gt("_creationTime", 1.0).lt("_id", "a"),
            "BoundsOnMultipleFields",
        ),
        ("by_creation_time", lambda q: q.eq("_creationTime", 1.0).gt("_id", "a"), None),
    ],
)
def test_a_range_on_a_table_not_made_yet_is_checked_as_on_one_that_exists(
    people: Engine, index: str, build: Any, code: str | None
) -> None:
    """by_id and by_creation_time have their fields whatever the table: a range that
    breaks the grammar raises the same error before the table's first insert as after
    (it read nothing, silently, until the insert made it fail)."""
    before: list[Any] = []
    for table in ("later", "people"):  # "later" does not exist
        try:
            people.run(lambda ctx, t=table: ctx.db.query(t).with_index(index, build).collect())
            before.append(None)
        except InvalidIndexRange as error:
            before.append((error.code, str(error).replace("later.", "people.")))
    assert before[0] == before[1]
    assert (before[1] and before[1][0]) == code


@pytest.mark.parametrize("name", ["bad-name", "a.b", "1st", "a b", "", "x" * 65])
def test_a_table_name_that_is_not_an_identifier_is_an_error(people: Engine, name: str) -> None:
    """Convex parses the table of a query and of normalizeId as a TableName (an
    identifier) before looking it up: a malformed name raises rather than reading
    nothing, as a missing table does."""
    some_id = people.query(lambda ctx: ctx.db.query("people").first())["_id"]
    with pytest.raises(InvalidTable, match="Invalid table name"):
        people.query(lambda ctx: ctx.db.query(name).collect())
    with pytest.raises(InvalidTable, match="Invalid table name"):
        people.query(lambda ctx: ctx.db.normalize_id(name, some_id))
    assert people.query(lambda ctx: ctx.db.normalize_id("nothere", some_id)) is None


def test_own_writes_visible_in_index_order_both_directions(people: Engine) -> None:
    def body(ctx):  # type: ignore[no-untyped-def]
        ctx.db.insert("people", {"name": "hal", "age": 26, "city": "oslo"})
        bob = ctx.db.query("people").filter(lambda f: f.eq(f.field("name"), "bob")).unique()
        ctx.db.patch(bob["_id"], {"age": 99})
        ann = ctx.db.query("people").filter(lambda f: f.eq(f.field("name"), "ann")).unique()
        ctx.db.delete(ann["_id"])
        q = lambda: ctx.db.query("people").with_index("by_city_age", lambda r: r.eq("city", "oslo"))
        return [d["name"] for d in q().collect()], [d["name"] for d in q().order("desc").collect()]

    asc, desc = people.run(body)
    assert asc == ["eve", "hal", "bob", "fay"]
    assert desc == ["fay", "bob", "hal", "eve"]


@pytest.mark.parametrize(
    ("a", "b", "quotient", "remainder"),
    [(7, 2, 3, 1), (-7, 2, -3, -1), (7, -2, -3, 1), (-7, -2, 3, -1), (-6, 3, -2, 0)],
)
def test_int64_division_truncates_like_i64(
    db_path: Path, a: int, b: int, quotient: int, remainder: int
) -> None:
    # Convex evaluates filters in Rust: i64 division truncates toward zero and the
    # remainder takes the dividend's sign (Python's // and % floor instead). A mutant
    # using // survived every test before this one.
    with Engine.open(db_path, durability="none") as engine:
        engine.run(lambda ctx: ctx.db.insert("n", {"a": a, "b": b}))

        def matches(build):  # type: ignore[no-untyped-def]
            return len(engine.run(lambda ctx: ctx.db.query("n").filter(build).collect()))

        assert matches(lambda f: f.eq(f.div(f.field("a"), f.field("b")), quotient)) == 1
        assert matches(lambda f: f.eq(f.mod(f.field("a"), f.field("b")), remainder)) == 1
        assert matches(lambda f: f.eq(f.div(f.field("a"), b), quotient)) == 1  # literal divisor


def test_a_patch_moving_an_index_key_reads_once_in_both_directions(people: Engine) -> None:
    # Inside the mutation the old key is removed from the overlay and the new one added;
    # a descending scan that ignored the removal (a mutant that survived the stateful
    # model, whose mutations only insert and delete) returned the document twice.
    def body(ctx):  # type: ignore[no-untyped-def]
        ann = ctx.db.query("people").filter(lambda f: f.eq(f.field("name"), "ann")).unique()
        ctx.db.patch(ann["_id"], {"age": 99})
        by_age = ctx.db.query("people").with_index("by_age")
        return (
            [d["name"] for d in by_age.order("asc").collect()],
            [
                d["name"]
                for d in ctx.db.query("people").with_index("by_age").order("desc").collect()
            ],
        )

    ascending, descending = people.run(body)
    assert ascending.count("ann") == descending.count("ann") == 1
    assert descending == list(reversed(ascending))


_MIN, _MAX = -(2**63), 2**63 - 1


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda q: q.add(_MAX, 1), f"Cannot add {_MAX} and 1: the result is out of range for Int64"),
        (lambda q: q.add(_MIN, -1), f"Cannot add {_MIN} and -1: the result is out of range for Int64"),
        (lambda q: q.sub(_MIN, 1), f"Cannot subtract {_MIN} and 1: the result is out of range for Int64"),
        (lambda q: q.sub(0, _MIN), f"Cannot subtract 0 and {_MIN}: the result is out of range for Int64"),
        (lambda q: q.mul(_MIN, -1), f"Cannot multiply {_MIN} and -1: the result is out of range for Int64"),
        (lambda q: q.mul(2**32, 2**31), f"Cannot multiply {2**32} and {2**31}: the result is out of range for Int64"),
        (lambda q: q.div(_MIN, -1), f"Cannot divide {_MIN} and -1: the result is out of range for Int64"),
        # Rust's checked_rem fails for INT64_MIN % -1 too, though the remainder is 0
        (lambda q: q.mod(_MIN, -1), f"Cannot mod {_MIN} and -1: the result is out of range for Int64"),
        (lambda q: q.div(1, 0), "Cannot divide 1 by zero"),
        (lambda q: q.mod(-7, 0), "Cannot mod -7 by zero"),
        (lambda q: q.neg(_MIN), f"Cannot negate {_MIN}: the result is out of range for Int64"),
        (lambda q: q.neg("a"), 'Cannot negate "a" (type String)'),
        (lambda q: q.add(1, 0.5), "Cannot add 1 (type Int64) and 0.5 (type Float64)"),
        (lambda q: q.mul(q.field("x"), 1), "Cannot multiply undefined (type undefined) and 1 (type Int64)"),
        (lambda q: q.sub(None, b"x"), "Cannot subtract null (type Null) and b'x' (type Bytes)"),
        (lambda q: q.not_(2), "Cannot use value 2 (type Int64) as a Boolean"),
        (lambda q: q.or_(False, [1]), "Cannot use value [1] (type Array) as a Boolean"),
        (lambda q: q.and_(True, 1e16), "Cannot use value 1e16 (type Float64) as a Boolean"),
    ],
)  # fmt: skip
def test_filter_errors_use_convex_wording(build: Any, message: str) -> None:
    # crates/common/src/query.rs (binary_arithmetic, Expression::eval) and
    # crates/common/src/types/maybe_value.rs (into_boolean).
    expr = predicate(build)
    for run in (lambda: evaluate(expr, {}), lambda: compile_expression(expr)({})):
        with pytest.raises(EvalError) as caught:
            run()
        assert str(caught.value) == message


@pytest.mark.parametrize(
    ("build", "result"),
    [
        (lambda q: q.add(_MAX, 0), _MAX),
        (lambda q: q.sub(_MIN, 0), _MIN),
        (lambda q: q.mul(_MIN, 1), _MIN),
        (lambda q: q.div(_MIN, 1), _MIN),
        (lambda q: q.div(_MAX, -1), -_MAX),
        (lambda q: q.mod(_MIN, 1), 0),
        (lambda q: q.mod(_MIN, 2), 0),
        (lambda q: q.mod(_MAX, -1), 0),
        (lambda q: q.div(-7, 2), -3),
        (lambda q: q.mod(-7, 2), -1),
        (lambda q: q.mod(7, -2), 1),
        (lambda q: q.neg(_MAX), -_MAX),
    ],
)  # fmt: skip
def test_int64_arithmetic_at_the_edges(build: Any, result: int) -> None:
    expr = predicate(build)
    assert evaluate(expr, {}) == result
    assert compile_expression(expr)({}) == result


def test_filter_result_must_be_a_boolean_in_convex_words() -> None:
    expr = predicate(lambda q: q.add(1, 1))
    with pytest.raises(EvalError, match=r"^Cannot use value 2 \(type Int64\) as a Boolean$"):
        passes(expr, {})
    with pytest.raises(EvalError, match=r"^Cannot use value 2 \(type Int64\) as a Boolean$"):
        compile_filters([expr])({})


def _float_bits(x: float) -> int:
    bits: int = struct.unpack(">Q", struct.pack(">d", x))[0]
    return bits


def _bits_float(bits: int) -> float:
    value: float = struct.unpack(">d", struct.pack(">Q", bits))[0]
    return value


_INF = math.inf
_NEGATIVE_NAN = _bits_float(0xFFF8_0000_0000_0001)  # a quiet NaN, sign bit set, a payload
_DEFAULT_NAN = 0x7FF8_0000_0000_0000


@pytest.mark.parametrize(
    ("build", "bits"),
    [
        # An invalid operation on non-NaN operands gives IEEE's default NaN, the same on
        # every host: x86 makes it with the sign bit set (so inf - inf computed by Python
        # there sorted before -inf), aarch64 (where Convex runs) and 0.0 / 0.0 without it.
        (lambda q: q.sub(_INF, _INF), _DEFAULT_NAN),
        (lambda q: q.add(_INF, -_INF), _DEFAULT_NAN),
        (lambda q: q.mul(_INF, 0.0), _DEFAULT_NAN),
        (lambda q: q.div(_INF, -_INF), _DEFAULT_NAN),
        (lambda q: q.div(0.0, -0.0), _DEFAULT_NAN),
        (lambda q: q.mod(_INF, 1.0), _DEFAULT_NAN),
        (lambda q: q.mod(1.0, 0.0), _DEFAULT_NAN),
        # A NaN operand is the result (IEEE 754 6.2.3), its sign and payload kept, also
        # where Python would raise (division and modulo by zero, fmod of an infinity).
        (lambda q: q.div(_NEGATIVE_NAN, 0.0), 0xFFF8_0000_0000_0001),
        (lambda q: q.mod(_NEGATIVE_NAN, 0.0), 0xFFF8_0000_0000_0001),
        (lambda q: q.mod(_INF, _NEGATIVE_NAN), 0xFFF8_0000_0000_0001),
        (lambda q: q.sub(_NEGATIVE_NAN, 1.0), 0xFFF8_0000_0000_0001),
        (lambda q: q.neg(_NEGATIVE_NAN), 0x7FF8_0000_0000_0001),
    ],
    ids=["inf-inf", "inf+-inf", "inf*0", "inf/-inf", "0/-0", "inf%1", "1%0", "-nan/0",
         "-nan%0", "inf%-nan", "-nan-1", "neg -nan"],
)  # fmt: skip
def test_float_arithmetic_nans_are_the_same_on_every_host(build: Any, bits: int) -> None:
    expr = predicate(build)
    for run in (lambda: evaluate(expr, {}), lambda: compile_expression(expr)({})):
        assert hex(_float_bits(run())) == hex(bits)
    # The sign decides where the NaN sorts: after every float, not before -inf.
    if bits == _DEFAULT_NAN:
        assert passes(predicate(lambda q: q.gt(build(q), _INF)), {})


def test_a_field_path_with_a_lone_surrogate_is_refused_in_printable_words() -> None:
    with pytest.raises(EvalError) as caught:
        predicate(lambda q: q.field("a.\ud800"))
    assert "Field name \\ud800 has invalid character" in str(caught.value).encode().decode()
