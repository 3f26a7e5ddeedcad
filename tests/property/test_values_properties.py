"""The value model against independent reference implementations."""

from __future__ import annotations

import copy
import struct
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.values import (
    UNSET,
    compare,
    convert,
    convert_document,
    format_value,
    value_size,
    values_equal,
)

from .strategies import documents, small_values, values

both = st.one_of(values(), small_values())


def reference_key(value: Any) -> tuple[Any, ...]:
    """A Python tuple ordered like Convex's order, written from the spec independently.

    Strings compare as UTF-8 bytes here, so agreement with ``compare`` (which
    uses code-point order) also checks that the two orders coincide.
    """
    if value is UNSET:
        return (0,)
    if value is None:
        return (1,)
    if type(value) is bool:
        return (4, int(value))
    if type(value) is int:
        return (2, value)
    if type(value) is float:
        bits = struct.unpack(">q", struct.pack(">d", value))[0]
        return (3, bits ^ (2**63 - 1) if bits < 0 else bits)
    if type(value) is str:
        return (5, value.encode("utf-8"))
    if type(value) is bytes:
        return (6, value)
    if type(value) is list:
        return (7, tuple(reference_key(item) for item in value))
    if type(value) is dict:
        return (8, tuple((key, reference_key(value[key])) for key in sorted(value)))
    raise AssertionError(f"not a value: {value!r}")


def reference_size(value: Any) -> int:
    if value is None or type(value) is bool:
        return 1
    if type(value) in (int, float):
        return 9
    if type(value) is str:
        return 2 + len(value.encode("utf-8"))
    if type(value) is bytes:
        return 2 + len(value)
    if type(value) is list:
        return 2 + sum(map(reference_size, value))
    return 2 + sum(len(k) + 1 + reference_size(v) for k, v in value.items())


def tupleize(value: Any) -> Any:
    """The same value spelled with tuples and bytearrays (what convert normalizes)."""
    if type(value) is list:
        return tuple(tupleize(item) for item in value)
    if type(value) is dict:
        return {key: tupleize(item) for key, item in value.items()}
    if type(value) is bytes:
        return bytearray(value)
    return value


@settings(max_examples=800)
@given(both, both)
def test_compare_matches_reference_order(a: Any, b: Any) -> None:
    ka, kb = reference_key(a), reference_key(b)
    assert compare(a, b) == (ka > kb) - (ka < kb)
    assert values_equal(a, b) == (ka == kb)


@settings(max_examples=300)
@given(both)
def test_a_value_equals_its_copy(value: Any) -> None:
    duplicate = copy.deepcopy(value)
    assert values_equal(value, duplicate)
    assert compare(value, duplicate) == 0


@settings(max_examples=400)
@given(values())
def test_convert_returns_stored_values_unchanged(value: Any) -> None:
    assert convert(value) is value


@settings(max_examples=300)
@given(values())
def test_convert_normalizes_tuples_and_buffers_and_is_idempotent(value: Any) -> None:
    spelled = tupleize(value)
    converted = convert(spelled)
    assert values_equal(converted, value)
    assert convert(converted) is converted


@settings(max_examples=400)
@given(values())
def test_value_size_matches_formula(value: Any) -> None:
    assert value_size(value) == reference_size(value)


@settings(max_examples=200)
@given(documents())
def test_documents_convert_unchanged(document: dict[str, Any]) -> None:
    assert convert_document(document) is document


@settings(max_examples=300)
@given(both, st.integers(10, 120))
def test_format_value_is_short_and_total(value: Any, limit: int) -> None:
    text = format_value(value, limit)
    assert 0 < len(text) <= limit


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=30),
    st.binary(max_size=20),
)
_hashable = st.recursive(
    st.one_of(st.integers(), st.text(max_size=8)),
    lambda inner: st.one_of(st.tuples(inner, inner), st.frozensets(inner, max_size=5)),
    max_leaves=10,
)
_containers = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=60),
        st.tuples(inner),
        st.tuples(inner, inner, inner),
        st.dictionaries(st.one_of(st.text(max_size=6), st.integers()), inner, max_size=50),
        st.sets(_hashable, max_size=50),
        st.frozensets(_hashable, max_size=50),
    ),
    max_leaves=200,
)


@given(_containers, st.integers(min_value=4, max_value=120))
@settings(max_examples=300, deadline=None)
def test_short_repr_is_repr_cut_to_its_limit(value: Any, limit: int) -> None:
    # short_repr renders the built-in containers by their first items only: its text
    # must still be repr's, cut at the limit.
    from engine.formatting import short_repr

    full = repr(value)
    assert short_repr(value, limit) == (full if len(full) <= limit else full[: limit - 3] + "...")
