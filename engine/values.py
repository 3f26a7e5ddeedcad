"""Convex's value model in Python: checking, normalizing, sizing, ordering and equality.

A Convex value is one of ``None`` (null), ``int`` (Int64), ``float`` (Float64),
``bool`` (Boolean), ``str`` (String, also ids), ``bytes`` (Bytes), ``list``
(Array) or ``dict`` with ``str`` keys (Object). :data:`UNSET` stands for a
missing field (Convex's ``undefined``): it is never stored, removes a field in
``patch`` and sorts before every value.

:func:`convert` checks a Python value against the model and returns its stored
form; :func:`convert_document` adds the rules for a whole document. Both run on
every write, so they are one recursive pass with type dispatch and return their
input unchanged (no copy) when it is already in stored form. :func:`compare` is
Convex's total order, :func:`values_equal` its equality (``1 != 1.0``,
``0.0 != -0.0``, NaN equals NaN with the same bits); :mod:`engine.keys` encodes
the same order as bytes.

Example::

    >>> convert({"tags": ("a", "b"), "n": 1})
    {'tags': ['a', 'b'], 'n': 1}
    >>> compare(1, 0.5)   # every Int64 sorts before every Float64
    -1
"""

from __future__ import annotations

import json
import math
import re
import struct
from typing import Any, Final, NoReturn, TypeAlias

from .errors import LimitExceeded, ValidationError

__all__ = [
    "MAX_ARRAY_LENGTH",
    "MAX_DOCUMENT_NESTING",
    "MAX_DOCUMENT_SIZE",
    "MAX_FIELD_NAME_LENGTH",
    "MAX_OBJECT_FIELDS",
    "MAX_VALUE_NESTING",
    "SYSTEM_FIELDS",
    "UNSET",
    "Value",
    "compare",
    "convert",
    "convert_document",
    "format_value",
    "nesting",
    "type_name",
    "value_size",
    "values_equal",
]

#: Any Convex value in stored form (see the module docstring).
Value: TypeAlias = Any

MIN_INT64: Final = -(2**63)
MAX_INT64: Final = 2**63 - 1
MAX_ARRAY_LENGTH: Final = 8192
MAX_OBJECT_FIELDS: Final = 1024
MAX_FIELD_NAME_LENGTH: Final = 1024
MAX_VALUE_NESTING: Final = 64
MAX_DOCUMENT_NESTING: Final = 16
MAX_DOCUMENT_SIZE: Final = 1 << 20
#: Top-level fields the engine owns; every other top-level ``_`` field is refused.
SYSTEM_FIELDS: Final = frozenset({"_id", "_creationTime"})


class _Unset:
    """The type of :data:`UNSET`; there is exactly one instance."""

    __slots__ = ()
    _instance: _Unset | None = None

    def __new__(cls) -> _Unset:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "UNSET"  # pickle by reference to this module's global: stays the singleton

    def __copy__(self) -> _Unset:
        return self

    def __deepcopy__(self, memo: object) -> _Unset:
        return self


#: A missing field (Convex's ``undefined``): removes a field in ``patch``; the smallest value.
UNSET: Final = _Unset()

_INT_RANGE_HINT = (
    f"Int64 values must lie in {MIN_INT64}..{MAX_INT64}; store larger numbers as a float or a str."
)
_ALLOWED = "expected None, bool, int, float, str, bytes, list or dict"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_DOUBLE = struct.Struct(">d")
_DOUBLE_BITS = struct.Struct(">q")

# Field names already known to be valid: most documents repeat the same few, so
# the check is usually one set lookup. Bounded so hostile input cannot grow it.
_VALID_FIELD_NAMES: set[str] = set()
_VALID_FIELD_NAMES_CAP = 8192


class _Reject(Exception):
    """Internal: a rule was broken somewhere below; the path is collected while unwinding.

    ``template`` is a constant ``str.format`` template with ``{path}`` and
    positional fields; user content goes in ``args`` only, so it is never
    parsed as a template.
    """

    def __init__(self, template: str, *args: object, limit: str | None = None) -> None:
        super().__init__(template)
        self.template = template
        self.args_ = args
        self.limit = limit
        self.segments: list[int | str] = []  # innermost first

    def raise_at(self, base: str) -> NoReturn:
        path = base + "".join(_segment(s) for s in reversed(self.segments))
        message = self.template.format(*self.args_, path=path)
        if self.limit is None:
            raise ValidationError(message, path=path) from None
        raise LimitExceeded(message, limit=self.limit, path=path) from None


def _segment(step: int | str) -> str:
    if type(step) is int:
        return f"[{step}]"
    assert isinstance(step, str)
    return f".{step}" if _IDENTIFIER.match(step) else f"[{json.dumps(step)}]"


def convert(value: object, *, path: str = "$") -> Value:
    """Check ``value`` against Convex's value model and return its stored form.

    Tuples become lists, ``bytearray``/``memoryview`` become ``bytes`` and
    subclasses of the builtin types (``StrEnum``, ``IntEnum``, ``OrderedDict``)
    become the plain type; anything already in stored form is returned as is,
    without a copy (do not mutate it afterwards if you keep the result). Values
    may nest 64 levels deep. Cost: one pass over the value.

    Example::

        >>> convert([1, 2.5, b"x", ("a",)])
        [1, 2.5, b'x', ['a']]

    Raises :class:`ValidationError` (``.path`` like ``$.tags[2]``) for anything
    outside the model: other types, non-``str`` or invalid field names, ints
    outside 64 bits, strings with lone surrogates, :data:`UNSET`; and
    :class:`LimitExceeded` for arrays over 8192 items (``ArrayTooLong``),
    objects over 1024 fields (``TooManyFields``) or nesting over 64
    (``NestingTooDeep``).
    """
    try:
        return _convert(value, MAX_VALUE_NESTING, [0])
    except _Reject as reject:
        if reject.limit == "NestingTooDeep":
            reject.template = (
                "Value is too nested (nested {0} levels deep > maximum nesting {1}) (at {path})."
            )
            reject.args_ = (nesting(value), MAX_VALUE_NESTING)
        reject.raise_at(path)


def convert_document(document: object, *, path: str = "$") -> dict[str, Value]:
    """Like :func:`convert` for a whole document, plus the rules for documents.

    The document must be a ``dict``; top-level fields may not start with
    ``_`` except the system fields ``_id`` (a ``str``) and ``_creationTime``
    (a ``float``); nesting is at most 16 (the document counts as 1, each
    nested object or array adds 1) and the size by Convex's formula (see
    :func:`value_size`) at most 1 MiB. Cost: one pass over the document.

    Example::

        >>> convert_document({"name": "ada", "tags": ("x",)})
        {'name': 'ada', 'tags': ['x']}

    Raises :class:`ValidationError` as :func:`convert` does and for reserved
    ``_`` fields, and :class:`LimitExceeded` with ``NestingTooDeep`` or
    ``DocumentTooLarge`` (or the limits of :func:`convert`).
    """
    if not isinstance(document, dict):
        raise ValidationError(
            f"A document must be a dict (a Convex object), got {type_name(document)} "
            f"{format_value(document)} (at {path}).",
            path=path,
        )
    for field in document:
        if isinstance(field, str) and field[:1] == "_" and field not in SYSTEM_FIELDS:
            where = path + _segment(str.__str__(field))
            raise ValidationError(
                f"Field '{field}' starts with an underscore, which is only allowed for system "
                f"fields like '_id' (at {where}). Rename the field.",
                path=where,
            )
    size = [0]
    try:
        converted: dict[str, Value] = _convert(document, MAX_DOCUMENT_NESTING, size)
    except _Reject as reject:
        if reject.limit == "NestingTooDeep":
            reject.template = (
                "Document is too nested (nested {0} levels deep > maximum nesting {1}) "
                "(at {path}). Flatten the document or store the nested part in its own table."
            )
            reject.args_ = (nesting(document), MAX_DOCUMENT_NESTING)
        reject.raise_at(path)
    _check_system_fields(converted, path)
    if size[0] > MAX_DOCUMENT_SIZE:
        raise LimitExceeded(
            f"Value is too large ({_human_size(size[0])} > maximum size "
            f"{_human_size(MAX_DOCUMENT_SIZE)}): the document at {path} measures {size[0]} "
            f"bytes, over the limit of {MAX_DOCUMENT_SIZE}. Move large fields to file storage "
            "or split the document.",
            limit="DocumentTooLarge",
            path=path,
        )
    return converted


def _check_system_fields(document: dict[str, Value], path: str) -> None:
    if "_id" in document and type(document["_id"]) is not str:
        raise ValidationError(
            f"The '_id' field {format_value(document['_id'])} must be an Id (a str) "
            f"(at {path}._id).",
            path=f"{path}._id",
        )
    if "_creationTime" in document and type(document["_creationTime"]) is not float:
        raise ValidationError(
            f"The '_creationTime' field should be a float, is "
            f"{format_value(document['_creationTime'])} (at {path}._creationTime).",
            path=f"{path}._creationTime",
        )


def _convert(x: Any, remaining: int, size: list[int]) -> Any:
    """Stored form of ``x``; adds its Convex size to ``size[0]``.

    ``remaining`` is how many more levels of arrays/objects may open here.
    """
    t = type(x)
    if t is str:
        if x.isascii():
            size[0] += 2 + len(x)
        else:
            size[0] += 2 + _utf8_length(x)
        return x
    if t is float or t is bool or x is None:
        size[0] += 9 if t is float else 1
        return x
    if t is int:
        if MIN_INT64 <= x <= MAX_INT64:
            size[0] += 9
            return x
        raise _Reject(
            "{0} does not fit into a 64-bit signed integer. (at {path}) {1}",
            _int_text(x),
            _INT_RANGE_HINT,
        )
    if t is dict:
        return _convert_object(x, remaining, size)
    if t is list:
        return _convert_array(x, remaining, size)
    if t is bytes:
        size[0] += 2 + len(x)
        return x
    return _convert_other(x, remaining, size)


def _convert_array(x: Any, remaining: int, size: list[int]) -> list[Any]:
    if remaining == 0:
        raise _Reject("", limit="NestingTooDeep")
    if len(x) > MAX_ARRAY_LENGTH:
        raise _Reject(
            "Array length is too long ({0} > maximum length {1}) (at {path}). "
            "Split the array, or store its items as documents.",
            len(x),
            MAX_ARRAY_LENGTH,
            limit="ArrayTooLong",
        )
    remaining -= 1
    total = 2
    out: list[Any] | None = None if type(x) is list else []
    for i, item in enumerate(x):
        # Common scalars inline: a call per item would dominate the cost of big arrays.
        t = type(item)
        if t is str and item.isascii():
            total += 2 + len(item)
        elif t is float or (t is int and MIN_INT64 <= item <= MAX_INT64):
            total += 9
        elif t is bool or item is None:
            total += 1
        else:
            try:
                converted = _convert(item, remaining, size)
            except _Reject as reject:
                reject.segments.append(i)
                raise
            if out is not None:
                out.append(converted)
            elif converted is not item:
                out = x[:i]
                out.append(converted)
            continue
        if out is not None:
            out.append(item)
    size[0] += total
    return x if out is None else out


def _convert_object(x: Any, remaining: int, size: list[int]) -> dict[str, Any]:
    if remaining == 0:
        raise _Reject("", limit="NestingTooDeep")
    if len(x) > MAX_OBJECT_FIELDS:
        raise _Reject(
            "Object has too many fields ({0} > maximum number {1}) (at {path}). "
            "Store the entries as an array or as documents.",
            len(x),
            MAX_OBJECT_FIELDS,
            limit="TooManyFields",
        )
    remaining -= 1
    total = 2
    out: dict[str, Any] | None = None if type(x) is dict else {}
    for key, item in x.items():
        name = key
        if key not in _VALID_FIELD_NAMES or type(key) is not str:
            try:
                name = _field_name(key)
            except _Reject as reject:
                if isinstance(key, str):
                    reject.segments.append(str.__str__(key))
                raise
        # Common scalars inline: a call per field would dominate the cost.
        t = type(item)
        if t is str and item.isascii():
            total += len(name) + 3 + len(item)
            converted = item
        elif t is float or (t is int and MIN_INT64 <= item <= MAX_INT64):
            total += len(name) + 10
            converted = item
        elif t is bool or item is None:
            total += len(name) + 2
            converted = item
        else:
            total += len(name) + 1
            try:
                converted = _convert(item, remaining, size)
            except _Reject as reject:
                reject.segments.append(name)
                raise
        if out is not None:
            out[name] = converted
        elif converted is not item or name is not key:
            out = {}
            for earlier, value in x.items():
                if earlier == key:
                    break
                out[earlier] = value
            out[name] = converted
    size[0] += total
    return x if out is None else out


def _field_name(key: object) -> str:
    """``key`` as a checked field name (a ``str`` subclass such as a ``StrEnum`` becomes ``str``)."""
    if not isinstance(key, str):
        raise _Reject(
            "Object keys must be str; found key {0} of type {1} (at {path}). Convert the "
            "key with str(), or store the mapping as a list of [key, value] pairs.",
            _short_repr(key),
            type(key).__name__,
        )
    if type(key) is not str:
        key = str.__str__(key)
    if not (key.isascii() and key.isprintable()):
        bad = next(c for c in key if not (c.isascii() and c.isprintable()))
        raise _Reject(
            "Field name {0} has invalid character {1!r}: Field names can only contain "
            "non-control ASCII characters (at {path}).",
            json.dumps(key),
            bad,
        )
    if key[:1] == "$":
        raise _Reject(
            "Field name {0} starts with a '$', which is reserved. (at {path}) Rename the field.",
            key,
        )
    if len(key) > MAX_FIELD_NAME_LENGTH:
        raise _Reject(
            "Field name is too long ({0} > maximum {1}) (at {path}, field {2}...). "
            "Use a shorter name.",
            len(key),
            MAX_FIELD_NAME_LENGTH,
            json.dumps(key[:32]),
        )
    if len(_VALID_FIELD_NAMES) < _VALID_FIELD_NAMES_CAP:
        _VALID_FIELD_NAMES.add(key)
    return key


def _utf8_length(s: str) -> int:
    try:
        return len(s.encode("utf-8"))
    except UnicodeEncodeError as error:
        index = error.start
        raise _Reject(
            "String at {path} is not valid Unicode: it contains the lone surrogate {0!r} at "
            "index {1}. Convex strings must be valid UTF-8; fix the text (for example decode "
            "it with errors='replace') or store it as bytes.",
            s[index],
            index,
        ) from None


def _convert_other(x: Any, remaining: int, size: list[int]) -> Any:
    """The rare cases: tuples, byte buffers, subclasses of the builtin types, rejections."""
    if isinstance(x, tuple):
        return _convert_array(x, remaining, size)
    if isinstance(x, (bytearray, memoryview)):
        data = bytes(x)
        size[0] += 2 + len(data)
        return data
    if isinstance(x, int):  # IntEnum and the like (bool cannot be subclassed)
        return _convert(int.__int__(x), remaining, size)
    if isinstance(x, float):
        return _convert(float.__float__(x), remaining, size)
    if isinstance(x, str):
        return _convert(str.__str__(x), remaining, size)
    if isinstance(x, bytes):
        return _convert(bytes(x), remaining, size)
    if isinstance(x, list):
        return _convert_array(x, remaining, size)
    if isinstance(x, dict):
        return _convert_object(x, remaining, size)
    if x is UNSET:
        raise _Reject(
            "UNSET is not a valid Convex value (at {path}): it means 'missing' and is only "
            "allowed as a top-level field value in patch(), where it removes the field. "
            "Store None for an empty value."
        )
    raise _Reject(
        "{0} {1} is not a Convex value (at {path}): {2}.{3}",
        type(x).__name__,
        _short_repr(x),
        _ALLOWED,
        _hint(x),
    )


def _hint(x: object) -> str:
    if isinstance(x, (set, frozenset)):
        return " Convert the set to a list (for example sorted(...))."
    name = type(x).__name__
    if name in ("datetime", "date", "time"):
        return (
            " Store a point in time as a float of milliseconds since the epoch (as "
            "_creationTime is) or as an ISO-8601 str."
        )
    if name in ("Decimal", "Fraction"):
        return " Convert it to a float, or to a str to keep every digit."
    if hasattr(x, "__dataclass_fields__") or hasattr(x, "__struct_fields__"):
        return " Convert it to a dict first (dataclasses.asdict or msgspec.to_builtins)."
    return ""


def _int_text(n: int) -> str:
    """``str(n)``, except for huge ints (Python refuses to print over 4300 digits)."""
    if n.bit_length() <= 256:
        return int.__repr__(n)
    return f"<int of {n.bit_length()} bits>"


def _short_repr(x: object, limit: int = 40) -> str:
    try:
        text = repr(x)
    except Exception:  # a broken __repr__ must not hide the real error
        text = f"<{type(x).__name__} object>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def nesting(value: object) -> int:
    """How deeply arrays and objects nest in ``value``: 0 for a scalar, 1 for ``[1]``.

    Convex's measure for the nesting limits. Iterative, so any depth is safe.
    Cost: one pass over the value.
    """
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        level += 1
        deepest = max(deepest, level)
        stack.extend((child, level) for child in children)
    return deepest


def value_size(value: Value) -> int:
    """The size of a stored value by Convex's formula (what the 1 MiB limit counts).

    null and Boolean 1; Int64 and Float64 9; String 2 + UTF-8 bytes; Bytes
    2 + length; Array 2 + sum of items; Object 2 + sum of (len(name) + 1 +
    size of value). Cost: one pass over the value.

    Example::

        >>> value_size({"a": "xy"})
        8

    Raises :class:`TypeError` for a value not in stored form.
    """
    t = type(value)
    if t is str:
        return 2 + (len(value) if value.isascii() else len(value.encode("utf-8", "surrogatepass")))
    if t is int or t is float:
        return 9
    if t is bool or value is None:
        return 1
    if t is bytes:
        return 2 + len(value)
    if t is list:
        return 2 + sum(value_size(item) for item in value)
    if t is dict:
        return 2 + sum(len(key) + 1 + value_size(item) for key, item in value.items())
    raise TypeError(f"value_size expects a converted Convex value, got {type(value).__name__}")


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

_TYPE_NAMES: Final[dict[type, str]] = {
    _Unset: "undefined",
    type(None): "null",
    int: "int64",
    float: "float64",
    bool: "boolean",
    str: "string",
    bytes: "bytes",
    list: "array",
    dict: "object",
}


def _rank(value: object) -> int:
    rank = _RANKS.get(type(value))
    if rank is None:
        raise TypeError(
            f"compare expects converted Convex values (see engine.values.convert), got "
            f"{type(value).__name__} {_short_repr(value)}"
        )
    return rank


def _float_order_key(x: float) -> int:
    """An int whose order is IEEE 754 totalOrder (``f64::total_cmp``)."""
    bits: int = _DOUBLE_BITS.unpack(_DOUBLE.pack(x))[0]
    return bits ^ 0x7FFF_FFFF_FFFF_FFFF if bits < 0 else bits


def compare(a: Value, b: Value) -> int:
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


def values_equal(a: Value, b: Value) -> bool:
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


def type_name(value: object) -> str:
    """Convex's name for the type of ``value``, for messages.

    ``"null" "int64" "float64" "boolean" "string" "bytes" "array" "object"``,
    ``"undefined"`` for :data:`UNSET`; what :func:`convert` accepts and
    normalizes is named after its stored type (a tuple is an ``"array"``);
    other Python types give their class name (``"set"``).
    """
    name = _TYPE_NAMES.get(type(value))
    if name is not None:
        return name
    for base, base_name in _TYPE_NAMES.items():
        if isinstance(value, base):
            return base_name
    if isinstance(value, tuple):
        return "array"  # what convert makes of it
    if isinstance(value, (bytearray, memoryview)):
        return "bytes"
    return type(value).__name__


def format_value(value: object, max_length: int = 80) -> str:
    """A short rendering of ``value`` for error messages, in Convex's style.

    Strings are JSON-quoted, ints print as ``123`` and floats as ``123.0``
    (so the two stay apart), special floats as ``NaN``/``inf``/``-inf``,
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
        return repr(float(value))
    if isinstance(value, int):
        return _int_text(value)
    if isinstance(value, str):
        return json.dumps(value[: budget + 1], ensure_ascii=False)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return repr(bytes(value[: budget + 1]))
    return _short_repr(value, max(budget, 10))


def _human_size(n: int) -> str:
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
