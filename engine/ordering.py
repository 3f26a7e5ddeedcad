"""Convex's total order and equality over values.

:func:`compare` orders any two stored values (``UNSET < None < int < float <
bool < str < bytes < list < dict``); :func:`values_equal` is Convex's equality
(``1 != 1.0``, ``0.0 != -0.0``, NaN equals NaN with the same bits).
:mod:`engine.keys` encodes the same order as bytes; the property tests hold
the two to each other.

Example::

    >>> compare(1, 0.5)   # every Int64 sorts before every Float64
    -1
"""

from __future__ import annotations

import math
import struct
from typing import Any, Final

from .formatting import short_repr
from .unset import UNSET, _Unset

__all__ = ["compare", "values_equal"]

_DOUBLE = struct.Struct(">d")
_DOUBLE_BITS = struct.Struct(">q")


_RANKS: Final[dict[type, int]] = {
    _Unset: 0,
    type(None): 1,
    int: 2,
    float: 3,
    bool: 4,
    str: 5,
    bytes: 6,
    list: 7,
    dict: 8,
}


def _rank(value: object) -> int:
    rank = _RANKS.get(type(value))
    if rank is None:
        raise TypeError(
            f"compare expects converted Convex values (see engine.values.convert), got "
            f"{type(value).__name__} {short_repr(value)}"
        )
    return rank


def _float_order_key(x: float) -> int:
    """An int whose order is IEEE 754 totalOrder (``f64::total_cmp``)."""
    bits: int = _DOUBLE_BITS.unpack(_DOUBLE.pack(x))[0]
    return bits ^ 0x7FFF_FFFF_FFFF_FFFF if bits < 0 else bits


def compare(a: Any, b: Any) -> int:
    """Convex's total order: -1, 0 or 1 as ``a`` sorts before, with or after ``b``.

    ``UNSET < None < int < float < bool < str < bytes < list < dict``; across
    types only the type decides (``1 < 0.5``). Floats follow IEEE totalOrder
    (``-NaN < -inf < ... < -0.0 < 0.0 < ... < inf < NaN``); strings compare by
    code point, which for valid Unicode is exactly the UTF-8 byte order Convex
    uses; bytes bytewise; lists element-wise with a prefix first; dicts as
    their (key, value) pairs in sorted key order, a prefix first.
    :func:`engine.keys.encode` produces bytes with the same order.
    Cost: proportional to the common prefix of the two values.

    Example::

        >>> compare([1, "a"], [1, "b"]), compare(-0.0, 0.0), compare(None, UNSET)
        (-1, -1, 1)

    Raises :class:`TypeError` for values not in stored form (convert them first).
    """
    ta = type(a)
    tb = type(b)
    if ta is not tb:
        ra, rb = _rank(a), _rank(b)
        return -1 if ra < rb else 1
    if ta is float:
        if a < b:
            return -1
        if a > b:
            return 1
        ka, kb = _float_order_key(a), _float_order_key(b)  # NaNs, or 0.0 against -0.0
        return (ka > kb) - (ka < kb)
    if ta is list:
        for x, y in zip(a, b, strict=False):
            c = compare(x, y)
            if c:
                return c
        return (len(a) > len(b)) - (len(a) < len(b))
    if ta is dict:
        for x, y in zip(sorted(a), sorted(b), strict=False):
            if x != y:
                return -1 if x < y else 1
            c = compare(a[x], b[y])
            if c:
                return c
        return (len(a) > len(b)) - (len(a) < len(b))
    if ta is str or ta is int or ta is bytes or ta is bool:
        return -1 if a < b else (1 if a > b else 0)
    _rank(a)  # raises for anything outside the model
    return 0  # None == None, UNSET == UNSET


def values_equal(a: Any, b: Any) -> bool:
    """Convex equality: same type and :func:`compare` would return 0.

    So ``1`` and ``1.0`` differ, ``0.0`` and ``-0.0`` differ, and NaN equals a
    NaN with the same bits. Cost: one pass over the smaller value.

    Example::

        >>> values_equal({"a": [1]}, {"a": [1]}), values_equal(1, 1.0)
        (True, False)
    """
    if a is b:
        return True
    t = type(a)
    if t is not type(b):
        return False
    if t is float:
        if a == b:
            return a != 0.0 or math.copysign(1.0, a) == math.copysign(1.0, b)
        return a != a and b != b and _DOUBLE.pack(a) == _DOUBLE.pack(b)
    if t is list:
        return len(a) == len(b) and all(values_equal(x, y) for x, y in zip(a, b, strict=True))
    if t is dict:
        if len(a) != len(b):
            return False
        for key, x in a.items():
            y = b.get(key, UNSET)
            if y is UNSET or not values_equal(x, y):
                return False
        return True
    return bool(a == b)
