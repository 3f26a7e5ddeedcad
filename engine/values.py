"""Convex's value model in Python: checking, normalizing and sizing values.

A Convex value is one of ``None`` (null), ``int`` (Int64), ``float`` (Float64),
``bool`` (Boolean), ``str`` (String, also ids), ``bytes`` (Bytes), ``list``
(Array) or ``dict`` with ``str`` keys (Object). :data:`UNSET` stands for a
missing field (Convex's ``undefined``): it is never stored; an object field set to
it is left out (Convex drops ``undefined`` fields), ``patch`` removes it, and it sorts
before every value.

:func:`convert` checks a Python value against the model and returns its stored
form; :func:`convert_document` adds the rules for a whole document. Both run on
every write, so they are one recursive pass with type dispatch and return their
input unchanged (no copy) when it is already in stored form. Convex's order
and equality live in :mod:`engine.ordering`, the way values appear in messages
in :mod:`engine.formatting`, :data:`UNSET` in :mod:`engine.unset`; this module
re-exports them.

Example::

    >>> convert({"tags": ("a", "b"), "n": 1})
    {'tags': ['a', 'b'], 'n': 1}
    >>> compare(1, 0.5)   # every Int64 sorts before every Float64
    -1
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any, Final, NoReturn, TypeAlias

from .errors import LimitExceeded, ValidationError
from .formatting import format_value, human_size, int_text, printable, short_repr, type_name
from .ordering import compare, values_equal
from .unset import UNSET

__all__ = [
    "MAX_ARRAY_LENGTH",
    "MAX_DOCUMENT_NESTING",
    "MAX_DOCUMENT_SIZE",
    "MAX_FIELD_NAME_LENGTH",
    "MAX_OBJECT_FIELDS",
    "MAX_VALUE_NESTING",
    "MAX_WALKED_SIZE",
    "SYSTEM_FIELDS",
    "UNSET",
    "Value",
    "compare",
    "convert",
    "convert_document",
    "convert_sized",
    "format_value",
    "nesting",
    "size_texts",
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
#: Past this size (Convex's measure) a conversion stops walking: no Convex value is
#: larger than 16 MiB (arguments, results, a transaction's writes), and a value that
#: refers to one list or dict many times counts each reference in full, so without a
#: bound a few objects in memory could take hours to walk.
MAX_WALKED_SIZE: Final = 64 << 20
#: Top-level fields the engine owns; every other top-level ``_`` field is refused.
SYSTEM_FIELDS: Final = frozenset({"_id", "_creationTime"})


_INT_RANGE_HINT = (
    f"Int64 values must lie in {MIN_INT64}..{MAX_INT64}; store larger numbers as a float or a str."
)
_ALLOWED = "expected None, bool, int, float, str, bytes, list or dict"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

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
    outside 64 bits, strings with lone surrogates, :data:`UNSET` as an array element or
    the whole value (an object field set to it is left out); and
    :class:`LimitExceeded` for arrays over 8192 items (``ArrayTooLong``),
    objects over 1024 fields (``TooManyFields``) or nesting over 64
    (``NestingTooDeep``).
    """
    try:
        return _convert(value, MAX_VALUE_NESTING, [0])
    except _Reject as reject:
        _raise_for_value(reject, value, path)


def convert_sized(value: object, *, path: str = "$") -> tuple[Value, int]:
    """:func:`convert`, and the value's size by Convex's size rule (measured on the way,
    no extra pass): what Convex's 16 MiB limits on function arguments and results count.

    Example::

        >>> convert_sized(["ab", 1])
        (['ab', 1], 15)
    """
    size = [0]
    try:
        return _convert(value, MAX_VALUE_NESTING, size), size[0]
    except _Reject as reject:
        _raise_for_value(reject, value, path)


def _raise_for_value(reject: _Reject, value: object, path: str) -> NoReturn:
    if reject.limit == "NestingTooDeep":
        _explain_nesting(reject, "Value", value, MAX_VALUE_NESTING, "")
    reject.raise_at(path)


def _explain_nesting(reject: _Reject, what: str, value: object, limit: int, hint: str) -> None:
    """Word ``reject`` (a ``NestingTooDeep``) for ``value``: its depth, or its cycle."""
    try:
        depth = nesting(value)
    except ValueError:
        reject.template = (
            what + " is too nested (it contains itself: nested without end > maximum nesting "
            "{0}) (at {path}). A Convex value is a tree: copy the repeated part "
            "instead of referring to it again." + hint
        )
        reject.args_ = (limit,)
        return
    reject.template = (
        what + " is too nested (nested {0} levels deep > maximum nesting {1}) (at {path})." + hint
    )
    reject.args_ = (depth, limit)


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
        if (
            isinstance(field, str)
            and field[:1] == "_"
            and field not in SYSTEM_FIELDS
            and document[field] is not UNSET  # left out, as Convex drops undefined fields
        ):
            where = path + _segment(str.__str__(field))
            raise ValidationError(
                f"Field '{printable(field)}' starts with an underscore, which is only allowed for system "
                f"fields like '_id' (at {where}). Rename the field.",
                path=where,
            )
    size = [0]
    try:
        converted: dict[str, Value] = _convert(document, MAX_DOCUMENT_NESTING, size)
    except _Reject as reject:
        if reject.limit == "ValueTooLarge":  # past MAX_WALKED_SIZE: the document's error
            raise _document_too_large(path, None) from None
        if reject.limit == "NestingTooDeep":
            _explain_nesting(
                reject,
                "Document",
                document,
                MAX_DOCUMENT_NESTING,
                " Flatten the document or store the nested part in its own table.",
            )
        reject.raise_at(path)
    _check_system_fields(converted, path)
    if size[0] > MAX_DOCUMENT_SIZE:
        raise _document_too_large(path, size[0])
    return converted


def size_texts(size: int | None) -> tuple[str, str]:
    """``size`` for an error message, human and in bytes (``size`` None: more than
    :data:`MAX_WALKED_SIZE`, where a conversion stops measuring)."""
    if size is None:
        return f"more than {human_size(MAX_WALKED_SIZE)}", f"more than {MAX_WALKED_SIZE}"
    return human_size(size), str(size)


def _document_too_large(path: str, size: int | None) -> LimitExceeded:
    """The error of a document over 1 MiB (``size`` None: over :data:`MAX_WALKED_SIZE`)."""
    shown, measured = size_texts(size)
    return LimitExceeded(
        f"Value is too large ({shown} > maximum size {human_size(MAX_DOCUMENT_SIZE)}): "
        f"the document at {path} measures {measured} bytes, over the limit of "
        f"{MAX_DOCUMENT_SIZE}. Move large fields to file storage or split the document.",
        limit="DocumentTooLarge",
        path=path,
    )


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
            int_text(x),
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
    if size[0] > MAX_WALKED_SIZE:  # once per array: its items' walks are bounded too
        raise _too_large()
    return x if out is None else out


def _convert_object(x: Any, remaining: int, size: list[int]) -> dict[str, Any]:
    if remaining == 0:
        raise _Reject("", limit="NestingTooDeep")
    if len(x) > MAX_OBJECT_FIELDS and (present := _present_fields(x)) > MAX_OBJECT_FIELDS:
        raise _Reject(
            "Object has too many fields ({0} > maximum number {1}) (at {path}). "
            "Store the entries as an array or as documents.",
            present,
            MAX_OBJECT_FIELDS,
            limit="TooManyFields",
        )
    remaining -= 1
    total = 2
    out: dict[str, Any] | None = None if type(x) is dict else {}
    for key, item in x.items():
        if item is UNSET:  # Convex drops undefined-valued keys: the field is absent
            if out is None:
                out = {}
                for earlier, value in x.items():
                    if earlier == key:
                        break
                    out[earlier] = value
            continue
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
    if size[0] > MAX_WALKED_SIZE:
        raise _too_large()
    return x if out is None else out


def _too_large() -> _Reject:
    return _Reject(
        "Value is too large (more than {0} by Convex's size rule, which counts a list or "
        "dict referred to several times once per reference) (at {path}). Convex values "
        "are at most 16 MiB: store large data as files (ctx.storage).",
        human_size(MAX_WALKED_SIZE),
        limit="ValueTooLarge",
    )


def _present_fields(x: Any) -> int:
    """How many fields of ``x`` are not :data:`UNSET` (those are left out, unchecked)."""
    return sum(1 for item in x.values() if item is not UNSET)


def _field_name(key: object) -> str:
    """``key`` as a checked field name (a ``str`` subclass such as a ``StrEnum`` becomes ``str``)."""
    if not isinstance(key, str):
        raise _Reject(
            "Object keys must be str; found key {0} of type {1} (at {path}). Convert the "
            "key with str(), or store the mapping as a list of [key, value] pairs.",
            short_repr(key),
            type(key).__name__,
        )
    if type(key) is not str:
        key = str.__str__(key)
    if key[:1] == "$":  # checked first, as Convex's check_valid_field_name does
        raise _Reject(
            "Field name {0} starts with a '$', which is reserved. (at {path}) Rename the field.",
            printable(key),
        )
    if not (key.isascii() and key.isprintable()):
        bad = next(c for c in key if not (c.isascii() and c.isprintable()))
        raise _Reject(
            "Field name {0} has invalid character {1!r}: Field names can only contain "
            "non-control ASCII characters (at {path}).",
            # readable; control characters and lone surrogates stay escaped
            printable(json.dumps(key, ensure_ascii=False)),
            bad,
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
        try:
            data = bytes(x)
        except ValueError:  # a released memoryview has no bytes left to read
            raise _Reject(
                "memoryview at {path} was released: its bytes can no longer be read. "
                "Convert it with bytes(...) before releasing it."
            ) from None
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
            "UNSET is not a valid Convex value (at {path}): it means 'missing', so it may "
            "only stand for an object's field (left out, as Convex drops undefined fields; "
            "removed by patch()), not for an array element or a whole value. Store None "
            "for an empty value."
        )
    raise _Reject(
        "{0} {1} is not a Convex value (at {path}): {2}.{3}",
        type(x).__name__,
        short_repr(x),
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


def nesting(value: object) -> int:
    """How deeply arrays and objects nest in ``value``: 0 for a scalar, 1 for ``[1]``.

    Convex's measure for the nesting limits. Iterative, so any depth is safe, and
    each list or dict is measured once, however many times it is shared. Cost: one
    pass over the distinct lists and dicts.

    Example::

        >>> nesting({"a": [1, {"b": ()}]})
        4

    Raises :class:`ValueError` for a value that contains itself (its nesting has
    no end).
    """
    if not isinstance(value, (dict, list, tuple)):
        return 0
    depths: dict[int, int] = {}  # id -> nesting of each container measured so far
    open_ids = {id(value)}  # the containers on the path being walked
    # Per open container: its id, an iterator over its children, its deepest child.
    frames: list[tuple[int, Iterator[object], list[int]]] = [
        (id(value), iter(_children(value)), [0])
    ]
    while True:
        key, children, deepest = frames[-1]
        for child in children:
            if not isinstance(child, (dict, list, tuple)):
                continue
            known = depths.get(id(child))
            if known is not None:
                deepest[0] = max(deepest[0], known)
                continue
            if id(child) in open_ids:
                raise ValueError("the value contains itself: its nesting has no end")
            open_ids.add(id(child))
            frames.append((id(child), iter(_children(child)), [0]))
            break
        else:
            frames.pop()
            open_ids.discard(key)
            depth = depths[key] = deepest[0] + 1
            if not frames:
                return depth
            parent = frames[-1][2]
            parent[0] = max(parent[0], depth)


def _children(container: Any) -> Iterable[object]:
    return container.values() if isinstance(container, dict) else container


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
