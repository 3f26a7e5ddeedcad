"""Property test: compiled validators agree with a tiny reference implementation.

Hypothesis builds validator specs (nested tuples), compiles each with ``v``
and checks random values, plus values generated to match, against
``reference`` below: plain recursive code, slow and obviously right.
"""

from __future__ import annotations

import math
import struct
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from engine import ValidationError, v
from engine.encoding import decode, encode
from engine.validators import Validator, validator_from_json

from .strategies import small_values

LITERALS = st.sampled_from(["a", "", 0, 1, -1, 0.0, -0.0, 1.5, True, False])
NAMES = st.sampled_from(["a", "b", "c"])

leaf = st.one_of(
    st.sampled_from(
        [("string",), ("number",), ("int64",), ("boolean",), ("null",), ("bytes",), ("any",)]
    ),
    LITERALS.map(lambda x: ("literal", x)),
)


def _extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        children.map(lambda c: ("array", c)),
        st.dictionaries(NAMES, st.tuples(children, st.booleans()), max_size=3).map(
            lambda d: ("object", d)
        ),
        st.lists(children, min_size=1, max_size=3).map(lambda cs: ("union", tuple(cs))),
        children.map(lambda c: ("record", c)),
    )


specs = st.recursive(leaf, _extend, max_leaves=6)


def build(spec: Any) -> Validator:
    kind = spec[0]
    if kind == "literal":
        return v.literal(spec[1])
    if kind == "array":
        return v.array(build(spec[1]))
    if kind == "object":
        return v.object(
            {k: v.optional(build(c)) if opt else build(c) for k, (c, opt) in spec[1].items()}
        )
    if kind == "union":
        return v.union(*(build(c) for c in spec[1]))
    if kind == "record":
        return v.record(v.string(), build(spec[1]))
    return getattr(v, kind)()


def _bits(x: float) -> int:
    return int(struct.unpack(">q", struct.pack(">d", x))[0])


def reference(spec: Any, value: Any) -> bool:
    kind = spec[0]
    if kind == "string":
        return type(value) is str
    if kind == "number":
        return type(value) is float
    if kind == "int64":
        return type(value) is int
    if kind == "boolean":
        return type(value) is bool
    if kind == "null":
        return value is None
    if kind == "bytes":
        return type(value) is bytes
    if kind == "any":
        return True
    if kind == "literal":
        lit = spec[1]
        if type(value) is not type(lit):
            return False
        if type(lit) is float:
            return _bits(value) == _bits(lit) or (
                math.isnan(value) and math.isnan(lit) and _bits(value) == _bits(lit)
            )
        return bool(value == lit)
    if kind == "array":
        return type(value) is list and all(reference(spec[1], x) for x in value)
    if kind == "object":
        fields = spec[1]
        if type(value) is not dict or not set(value) <= set(fields):
            return False
        for name, (child, optional) in fields.items():
            if name not in value:
                if not optional:
                    return False
            elif not reference(child, value[name]):
                return False
        return True
    if kind == "union":
        return any(reference(c, value) for c in spec[1])
    if kind == "record":
        return type(value) is dict and all(
            # Convex checks a record's keys with the key validator only (v.string()
            # here): "" and "_a" pass; "$a" is no Convex object key in the first place.
            isinstance(k, str) and not k.startswith("$") and reference(spec[1], x)
            for k, x in value.items()
        )
    raise AssertionError(kind)


def matching(spec: Any) -> st.SearchStrategy[Any]:
    """Values that match ``spec`` (so the accept path is exercised, not just rejects)."""
    kind = spec[0]
    simple = {
        "string": st.text(max_size=3),
        "number": st.floats(),
        "int64": st.integers(-5, 5),
        "boolean": st.booleans(),
        "null": st.none(),
        "bytes": st.binary(max_size=3),
        "any": small_values(1),
    }
    if kind in simple:
        return simple[kind]
    if kind == "literal":
        return st.just(spec[1])
    if kind == "array":
        return st.lists(matching(spec[1]), max_size=3)
    if kind == "union":
        return st.one_of(*(matching(c) for c in spec[1]))
    if kind == "record":
        return st.dictionaries(NAMES, matching(spec[1]), max_size=2)
    fields = spec[1]
    return st.fixed_dictionaries(
        {k: matching(c) for k, (c, opt) in fields.items() if not opt},
        optional={k: matching(c) for k, (c, opt) in fields.items() if opt},
    )


def agrees(spec: Any, value: Any) -> None:
    expected = reference(spec, value)
    try:
        build(spec).validate(value)
        got = True
    except ValidationError:
        got = False
    assert got == expected, (spec, value)


@settings(max_examples=300, deadline=None)
@given(spec=specs, value=small_values(2))
def test_arbitrary_values_agree_with_reference(spec: Any, value: Any) -> None:
    agrees(spec, value)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), spec=specs)
def test_matching_values_pass(data: st.DataObject, spec: Any) -> None:
    value = data.draw(matching(spec))
    agrees(spec, value)
    assert reference(spec, value)


@settings(max_examples=300, deadline=None)
@given(spec=specs, value=small_values(2))
def test_stored_form_round_trips(spec: Any, value: Any) -> None:
    # A schema is stored as msgpack of to_json() and enforced as validator_from_json of
    # it: the rebuilt validator reads the same, stores the same and judges alike.
    validator = build(spec)
    again = validator_from_json(decode(encode(validator.to_json())))
    assert again == validator and again.to_json() == validator.to_json()
    assert (again.check(value) is None) == (validator.check(value) is None)
