"""Sort keys against the value order: order, equality, round trip, prefix-freeness."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from engine import keys
from engine.values import UNSET, compare, values_equal

from .strategies import small_values, values

both = st.one_of(values(), small_values())
top_level = st.one_of(st.just(UNSET), both)  # UNSET may appear only at the top of a key


def sign(n: int) -> int:
    return (n > 0) - (n < 0)


def bytes_order(a: bytes, b: bytes) -> int:
    return (a > b) - (a < b)


@settings(max_examples=800)
@given(top_level, top_level)
def test_byte_order_is_value_order(a: Any, b: Any) -> None:
    assert bytes_order(keys.encode(a), keys.encode(b)) == sign(compare(a, b))


@settings(max_examples=500)
@given(top_level, top_level)
def test_equal_bytes_exactly_when_values_equal(a: Any, b: Any) -> None:
    assert (keys.encode(a) == keys.encode(b)) == values_equal(a, b)


@settings(max_examples=500)
@given(top_level)
def test_round_trip(value: Any) -> None:
    key = keys.encode(value)
    decoded = keys.decode(key)
    assert values_equal(decoded, value)
    assert keys.encode(decoded) == key


@settings(max_examples=300)
@given(st.lists(top_level, max_size=5))
def test_concatenation_splits_back(items: list[Any]) -> None:
    decoded = keys.decode_many(keys.encode_many(items))
    assert len(decoded) == len(items)
    assert all(values_equal(x, y) for x, y in zip(decoded, items, strict=True))


@settings(max_examples=400)
@given(st.lists(both, min_size=3, max_size=3), st.lists(both, min_size=3, max_size=3))
def test_concatenations_order_like_tuples(xs: list[Any], ys: list[Any]) -> None:
    """An index key's field part orders like the tuple of its values."""
    assert bytes_order(keys.encode_many(xs), keys.encode_many(ys)) == sign(compare(xs, ys))


@settings(max_examples=500)
@given(top_level, top_level)
def test_keys_are_prefix_free_and_prefix_end_bounds_them(a: Any, b: Any) -> None:
    ka, kb = keys.encode(a), keys.encode(b)
    if ka != kb:
        assert not kb.startswith(ka)
    end = keys.prefix_end(ka)
    assert end is not None
    # Everything that sorts at or before `a`, and nothing after it, is below prefix_end.
    assert (kb < end) == (compare(b, a) <= 0)
    # ...also when more key parts follow, as in an index key.
    assert (kb + b"\x0d\xff" < end) == (compare(b, a) <= 0)


@settings(max_examples=300)
@given(st.lists(small_values(), min_size=3, max_size=3))
def test_compare_is_a_total_order(triple: list[Any]) -> None:
    for a, b in itertools.permutations(triple, 2):
        assert sign(compare(a, b)) == -sign(compare(b, a))
        assert (compare(a, b) == 0) == values_equal(a, b)
    for a, b, c in itertools.permutations(triple, 3):
        if compare(a, b) <= 0 and compare(b, c) <= 0:
            assert compare(a, c) <= 0


@settings(max_examples=300)
@given(st.binary(max_size=40))
def test_decode_accepts_only_canonical_keys(data: bytes) -> None:
    """Random bytes either fail cleanly or are exactly the key of what they decode to."""
    try:
        value = keys.decode(data)
    except ValueError:
        return
    assert keys.encode(value) == data
