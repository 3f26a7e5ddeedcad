"""How values appear in messages: Convex's type names and short renderings.

:func:`type_name` gives Convex's name for a value's type (``"Float64"``,
``"undefined"``), :func:`format_value` a bounded, Convex-style rendering
(``{"a": [1, 2.0, "x"]}``: ints and floats stay apart), :func:`human_size` a
byte count in binary units. Every error message that shows a value uses them.

Example::

    >>> type_name(1.0), format_value(b"x"), human_size(1_100_000)
    ('Float64', "b'x'", '1.05 MiB')
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection
from itertools import islice
from typing import Any, Final, cast

from .unset import UNSET, _Unset

__all__ = ["format_value", "human_size", "int_text", "printable", "short_repr", "type_name"]

# As Convex's ConvexValue::type_name (crates/value/src/walk.rs) and MaybeValue's
# "undefined" for a missing field (crates/common/src/types/maybe_value.rs).
_TYPE_NAMES: Final[dict[type, str]] = {
    _Unset: "undefined",
    type(None): "Null",
    int: "Int64",
    float: "Float64",
    bool: "Boolean",
    str: "String",
    bytes: "Bytes",
    list: "Array",
    dict: "Object",
}


def int_text(n: int) -> str:
    """``str(n)``, except for huge ints (Python refuses to print over 4300 digits)."""
    if n.bit_length() <= 256:
        return int.__repr__(n)
    return f"<int of {n.bit_length()} bits>"


def printable(text: str) -> str:
    """``text`` with any lone surrogate written as an escape (``\\ud800``), so that a
    message quoting it can be encoded as UTF-8; other text is returned unchanged.

    Values hold no lone surrogates (:func:`engine.values.convert` refuses them), but
    messages quote what was refused. Cost: one check for ASCII text.

    Example::

        >>> printable("a\\ud800é")
        'a\\\\ud800é'
    """
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def short_repr(x: object, limit: int = 40) -> str:
    """``repr(x)`` cut to ``limit`` characters, and never an exception.

    Cost: bounded by ``limit`` for the built-in containers (their first items only: a
    set of millions of items is not rendered whole to show 40 characters), else one
    ``repr``.

    Example::

        >>> short_repr(set(range(10**7)))
        '{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11...'
    """
    try:
        text = _head_repr(x, limit)
    except Exception:  # a broken __repr__ must not hide the real error
        text = f"<{type(x).__name__} object>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _head_repr(x: object, limit: int, within: frozenset[int] = frozenset()) -> str:
    """At least the first ``limit`` characters of ``repr(x)`` (all of it if shorter);
    ``within``: the ids of the containers ``x`` is inside (a cycle shows as ``...``)."""
    kind = type(x)
    if kind not in _CONTAINERS or not x:  # (an empty set is "set()")
        return repr(x)
    if id(x) in within:  # as repr shows a list inside itself: [1, [...]]
        return f"{_CONTAINERS[kind][0]}...{_CONTAINERS[kind][1]}"
    within |= {id(x)}
    # Each item takes at least one character and a separator: `limit` items are enough.
    container = cast("Collection[Any]", x)
    items = list(islice(x.items() if isinstance(x, dict) else container, limit + 1))
    more = len(items) > limit
    if kind is dict:
        shown = [
            f"{_head_repr(k, limit, within)}: {_head_repr(v, limit, within)}"
            for k, v in items[:limit]
        ]
    else:
        shown = [_head_repr(item, limit, within) for item in items[:limit]]
    if more:
        shown.append("...")  # never reached by the cut: the items before are long enough
    elif kind is tuple and len(shown) == 1:
        shown[0] += ","
    opening, closing = _CONTAINERS[kind]
    return f"{opening}{', '.join(shown)}{closing}"


#: The built-in containers :func:`short_repr` renders by their first items.
_CONTAINERS: Final[dict[type, tuple[str, str]]] = {
    list: ("[", "]"),
    tuple: ("(", ")"),
    dict: ("{", "}"),
    set: ("{", "}"),
    frozenset: ("frozenset({", "})"),
}


def type_name(value: object) -> str:
    """Convex's name for the type of ``value``, for messages.

    ``"Null" "Int64" "Float64" "Boolean" "String" "Bytes" "Array" "Object"``,
    as Convex spells them in messages (``Cannot add 1 (type Int64) and 0.5
    (type Float64)``), ``"undefined"`` for :data:`UNSET`; what :func:`convert`
    accepts and normalizes is named after its stored type (a tuple is an
    ``"Array"``); other Python types give their class name (``"set"``).
    """
    name = _TYPE_NAMES.get(type(value))
    if name is not None:
        return name
    for base, base_name in _TYPE_NAMES.items():
        if isinstance(value, base):
            return base_name
    if isinstance(value, tuple):
        return "Array"  # what convert makes of it
    if isinstance(value, (bytearray, memoryview)):
        return "Bytes"
    return type(value).__name__


def format_value(value: object, max_length: int = 80) -> str:
    """A short rendering of ``value`` for error messages, in Convex's style.

    Strings are JSON-quoted, ints print as ``123`` and floats as Rust prints
    an f64 (``123.0``, ``1e16``, ``1e-5``: ints and floats stay apart),
    special floats as ``NaN``/``inf``/``-inf``,
    bytes as ``b"..."``, arrays and objects JSON-like. Longer output is cut
    at ``max_length`` characters with ``...``; cost is bounded by that length.

    Example::

        >>> format_value({"a": [1, 2.0, "x"]})
        '{"a": [1, 2.0, "x"]}'
    """
    parts: list[str] = []
    _format_into(value, parts, max_length + 1)
    text = "".join(parts)
    return text if len(text) <= max_length else text[: max_length - 3] + "..."


def _format_into(value: object, parts: list[str], budget: int) -> int:
    """Append a rendering of ``value`` to ``parts``; returns the budget left."""
    if budget <= 0:
        return budget
    if isinstance(value, dict):
        parts.append("{")
        budget -= 1
        for i, (key, item) in enumerate(value.items()):
            if budget <= 0:
                break
            text = (", " if i else "") + _format_scalar(key) + ": "
            parts.append(text)
            budget = _format_into(item, parts, budget - len(text))
        parts.append("}")
        return budget - 1
    if isinstance(value, (list, tuple)):
        parts.append("[")
        budget -= 1
        for i, item in enumerate(value):
            if budget <= 0:
                break
            if i:
                parts.append(", ")
                budget -= 2
            budget = _format_into(item, parts, budget)
        parts.append("]")
        return budget - 1
    text = _format_scalar(value, budget)
    parts.append(text)
    return budget - len(text)


def _format_scalar(value: object, budget: int = 200) -> str:
    if value is None:
        return "null"
    if value is UNSET:
        return "undefined"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value != value:
            return "NaN"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        text = repr(float(value))
        if "e" in text:  # Rust's f64 Debug writes 1e16 and 1e-5 where Python writes 1e+16, 1e-05
            mantissa, exponent = text.split("e")
            text = f"{mantissa}e{int(exponent)}"
        return text
    if isinstance(value, int):
        return int_text(value)
    if isinstance(value, str):
        return printable(json.dumps(value[: budget + 1], ensure_ascii=False))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return repr(bytes(value[: budget + 1]))
    return short_repr(value, max(budget, 10))


def human_size(n: int) -> str:
    """Bytes in binary units with two decimals, like Convex's messages (``1.05 MiB``)."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            text = f"{value:.2f}".rstrip("0").rstrip(".")
            return f"{text} {unit}"
    raise AssertionError("unreachable")
