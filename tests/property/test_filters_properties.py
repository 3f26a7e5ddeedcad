"""Compiled filters (``compile_expression``) agree with the interpreter (``evaluate``).

Random expression trees over a few fields: comparisons, ``and_ or_ not_``,
arithmetic and ``neg``, with literals of every type (small domains, so ties,
``-0.0``/``0.0``, NaN, Int64 overflow and division by zero come up), against
random documents: the same value, or the same :class:`EvalError` message.
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import EvalError
from engine.filters import (
    Expression,
    FilterBuilder,
    compile_expression,
    compile_filters,
    evaluate,
    passes,
)
from engine.values import values_equal

from .strategies import small_values

q = FilterBuilder()
FIELDS = ["a", "b", "c.d"]
LITERALS = st.one_of(
    small_values(1),
    st.sampled_from([(1 << 63) - 1, -(1 << 63), 2, -2, 3.0, -0.5, math.inf, -math.inf]),
)


def leaves() -> st.SearchStrategy[Expression]:
    return st.one_of(
        st.sampled_from(FIELDS).map(q.field),
        LITERALS.map(lambda value: Expression("literal", (value,))),
    )


def extend(children: st.SearchStrategy[Expression]) -> st.SearchStrategy[Expression]:
    binary = st.sampled_from(
        ["eq", "neq", "lt", "lte", "gt", "gte", "add", "sub", "mul", "div", "mod"]
    )
    return st.one_of(
        st.tuples(binary, children, children).map(lambda t: getattr(q, t[0])(t[1], t[2])),
        st.lists(children, min_size=1, max_size=3).map(lambda xs: q.and_(*xs)),
        st.lists(children, min_size=1, max_size=3).map(lambda xs: q.or_(*xs)),
        children.map(q.not_),
        children.map(q.neg),
    )


expressions = st.recursive(leaves(), extend, max_leaves=8)
documents = st.fixed_dictionaries(
    {},
    optional={
        "a": LITERALS,
        "b": LITERALS,
        "c": st.fixed_dictionaries({}, optional={"d": LITERALS}) | LITERALS,
    },
)


def outcome(fn: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "value", fn(*args)
    except EvalError as error:
        return "error", str(error)


def same(left: tuple[str, Any], right: tuple[str, Any]) -> bool:
    if left[0] != right[0]:
        return False
    if left[0] == "error":
        return bool(left[1] == right[1])
    return values_equal(left[1], right[1])


@settings(max_examples=600, deadline=None)
@given(expr=expressions, document=documents)
def test_compiled_expressions_evaluate_alike(expr: Expression, document: dict[str, Any]) -> None:
    interpreted = outcome(evaluate, expr, document)
    compiled = outcome(compile_expression(expr), document)
    assert same(interpreted, compiled), (expr, document, interpreted, compiled)


@settings(max_examples=300, deadline=None)
@given(filters=st.lists(expressions, min_size=1, max_size=3), document=documents)
def test_compiled_filters_keep_alike(filters: list[Expression], document: dict[str, Any]) -> None:
    def interpreted(doc: dict[str, Any]) -> bool:
        return all(passes(f, doc) for f in filters)

    assert same(outcome(interpreted, document), outcome(compile_filters(filters), document))


EDGE_VALUES = [
    None, False, True, -(1 << 63), -1, 0, 1, (1 << 63) - 1,
    -math.inf, -1.5, -0.0, 0.0, 1.5, math.inf, math.nan,
    "", "a", "ab", "b", "\x00", "é", "\U0001f600", "\uffff",
    b"", b"\x00", b"a", b"\xff",
    [], [1], {}, {"a": 1},
]  # fmt: skip


def test_field_against_literal_comparisons_agree_exhaustively() -> None:
    """Every comparison of a field with a literal, over edge values of every type.

    The compiled form compares natively when the field has the literal's type;
    this checks each such pair (and the mixed ones) against the interpreter.
    """
    for op in ("eq", "neq", "lt", "lte", "gt", "gte"):
        for literal in EDGE_VALUES:
            expr = getattr(q, op)(q.field("a"), Expression("literal", (literal,)))
            compiled = compile_expression(expr)
            for value in [*EDGE_VALUES, "missing"]:
                document = {} if value == "missing" else {"a": value}
                expected = evaluate(expr, document)
                assert compiled(document) is expected, (op, literal, value)
