"""Validators: the ``v`` namespace (``v.string()``, ``v.object({...})``, ...).

Validation is exact, as in Convex: object validators reject missing
required fields and extra fields, ``v.optional`` means the key may be absent
(``None`` is still a value that must match), ``v.int64()`` accepts only
``int`` and ``v.number()`` only ``float`` (``1`` does not pass
``v.number()``), ``v.literal`` compares with Convex's value equality (``1``
and ``1.0`` differ, ``0.0`` and ``-0.0`` differ), and ``v.id("t")`` accepts
only ids of table ``t``.

Each validator is compiled once: :meth:`Validator.validate` runs a chain of
closures whose success path does no allocation and no exception handling;
the path and message are built only on failure, in Convex's shape::

    Value does not match validator.
    Path: .author
    Value: 123.0
    Validator: v.string()
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from . import ids
from .errors import InvalidId, ValidationError
from .values import MAX_INT64, MIN_INT64, convert, format_value, values_equal

#: Keys a v.object declares: Convex's IdentifierFieldName (all-underscore names refused apart).
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")

__all__ = ["Validator", "as_validator", "pagination_opts", "v", "validator_from_json"]

#: resolver(table_number) -> table name or None (the engine supplies it).
Resolver = Callable[[int], "str | None"]
#: A compiled check: (value, resolver) -> None if valid, else (path, message).
Check = Callable[[Any, "Resolver | None"], "tuple[str, Any] | None"]


class _Lazy:
    """A failure message built only if someone reads it, for the failure's final path.

    Unions try members that are expected to fail; building their messages
    (rendering the value) would cost more than the checks themselves. ``build``
    takes the Convex context line (``"Path: .a[2]"``, or ``""`` at the top).
    """

    __slots__ = ("_build", "_path")

    def __init__(self, build: Callable[[str], str], path: str = "") -> None:
        self._build = build
        self._path = path

    def at(self, path: str) -> _Lazy:
        return _Lazy(self._build, path)

    def __str__(self) -> str:
        return self._build(f"Path: {self._path}" if self._path else "")


def _mismatch(value: Any, validator: Validator, hint: str = "") -> tuple[str, Any]:
    # Convex's ValidationError::NoMatch (crates/common/src/schemas/validator.rs); a
    # ``hint`` (for Python callers) goes on a line of its own after it.
    def build(context: str) -> str:
        return (
            f"Value does not match validator.\n{context}\nValue: {format_value(value)}\n"
            f"Validator: {validator!r}" + (f"\n{hint}" if hint else "")
        )

    return "", _Lazy(build)


def _float_mismatch(value: Any) -> tuple[str, Any]:
    # In JavaScript 1 is a float; in Python it is an int, which Convex stores as an Int64.
    if type(value) is int:
        return _mismatch(
            value,
            _FLOAT,
            f"(A Python int is a Convex Int64: pass a float, {value}.0, or declare v.int64().)",
        )
    return _mismatch(value, _FLOAT)


def _int_mismatch(value: Any) -> tuple[str, Any]:
    if type(value) is float and value.is_integer() and MIN_INT64 <= value <= MAX_INT64:
        return _mismatch(
            value,
            _INT,
            f"(A Python float is a Convex Float64: pass an int, {int(value)}, or declare "
            "v.float64().)",
        )
    return _mismatch(value, _INT)


def _nest(result: tuple[str, Any], segment: str) -> tuple[str, Any]:
    """Prefix a failure's path with ``segment`` (the message follows, lazily)."""
    path, inner = result
    new_path = segment + path
    return new_path, inner.at(new_path)


def _missing_message(name: str, value: Any, text: str, context: str) -> str:
    return (
        f"Object is missing the required field `{name}`. Consider wrapping the field validator "
        f"in `v.optional(...)` if this is expected.\n{context}\nObject: {format_value(value)}\n"
        f"Validator: {text}"
    )


def _extra_message(extra: str, value: Any, text: str, context: str) -> str:
    return (
        f"Object contains extra field `{extra}` that is not in the validator.\n{context}\n"
        f"Object: {format_value(value)}\nValidator: {text}"
    )


def _field_segment(name: str) -> str:
    return f".{name}" if name.isidentifier() else f"[{name!r}]"


class Validator:
    """A compiled validator. Build them with ``v``; check values with :meth:`validate`.

    Cost of :meth:`validate`: one pass over the value. Raises
    :class:`~engine.errors.ValidationError` with ``.path`` on a mismatch.
    """

    __slots__ = ("_check", "_fields_map", "_json", "_repr", "is_optional", "kind")

    def __init__(
        self,
        kind: str,
        check: Check,
        text: str,
        json: Any,
        *,
        is_optional: bool = False,
        fields: dict[str, Validator] | None = None,
    ) -> None:
        self.kind = kind
        self._check = check
        self._repr = text
        self._json = json
        self.is_optional = is_optional
        self._fields_map = fields

    def __repr__(self) -> str:
        return self._repr

    def __eq__(self, other: object) -> bool:
        # By the text, as the hash is: JSON forms compare 1 == 1.0 == True in Python,
        # and v.literal(1), v.literal(1.0) and v.literal(True) accept different values.
        return (
            isinstance(other, Validator)
            and self._repr == other._repr
            and self.is_optional == other.is_optional
        )

    def __hash__(self) -> int:
        return hash(self._repr)

    def validate(self, value: Any, *, resolver: Resolver | None = None) -> None:
        """Raise :class:`ValidationError` unless ``value`` matches.

        ``value`` is first taken into the value model as function arguments are
        (tuples become lists, ``bytearray`` becomes ``bytes``, ``UNSET`` object
        fields are dropped; sets, ints beyond Int64 or lone surrogates are
        refused), so ``validate`` accepts exactly what a function call would.
        ``resolver`` maps a table number to its name so ``v.id("t")`` can
        check the table; without it only the id's syntax is checked.
        """
        failure = self._check(convert(value), resolver)
        if failure is not None:
            raise ValidationError(str(failure[1]), path=failure[0])

    def check(self, value: Any, resolver: Resolver | None = None) -> tuple[str, str] | None:
        """``None`` if ``value`` matches, else ``(path, message)`` (no exception).

        For values already in the value model (stored documents, converted
        arguments): unlike :meth:`validate`, nothing is converted first.
        """
        failure = self._check(value, resolver)
        return None if failure is None else (failure[0], str(failure[1]))

    def to_json(self) -> Any:
        """Convex's ValidatorJSON form (stored with the schema): a copy the caller owns.

        The validator's own JSON is shared (by every ``v.string()``, and by the
        validators built on this one), so it is never handed out. Cost: linear in
        the validator's size.
        """
        return _copy_json(self._json)

    # -- object helpers -------------------------------------------------------

    def _fields(self) -> dict[str, Validator]:
        if self._fields_map is None:
            raise TypeError(f"{self!r} is not an object validator")
        return self._fields_map

    def _derived(self, fields: Mapping[str, Validator]) -> Validator:
        # Convex's object helpers keep the validator's optionality.
        derived = _object(fields)
        return _optional(derived) if self.is_optional else derived

    def pick(self, *names: str) -> Validator:
        """An object validator with only the fields ``names`` (optional if this one is)."""
        fields = self._fields()
        missing = [name for name in names if name not in fields]
        if missing:
            raise ValidationError(
                f"Cannot pick {missing!r} from {self!r}: it has no such field. "
                f"Its fields are {sorted(fields)!r}."
            )
        return self._derived({name: fields[name] for name in names})

    def omit(self, *names: str) -> Validator:
        """An object validator without the fields ``names`` (optional if this one is)."""
        return self._derived({k: f for k, f in self._fields().items() if k not in names})

    def extend(self, more: Mapping[str, Validator]) -> Validator:
        """An object validator with extra (or replaced) fields (optional if this one is)."""
        return self._derived({**self._fields(), **dict(more)})

    def partial(self) -> Validator:
        """An object validator whose every field is optional (optional if this one is)."""
        return self._derived(
            {k: f if f.is_optional else _optional(f) for k, f in self._fields().items()}
        )


def _copy_json(json: Any) -> Any:
    """A copy of validator JSON: its dicts and lists new, its scalars shared."""
    if type(json) is dict:
        return {key: _copy_json(item) for key, item in json.items()}
    if type(json) is list:
        return [_copy_json(item) for item in json]
    return json


def _simple(kind: str, text: str, accepts: Callable[[Any], bool]) -> Validator:
    holder: list[Validator] = []

    def check(value: Any, resolver: Resolver | None) -> tuple[str, Any] | None:
        return None if accepts(value) else _mismatch(value, holder[0])

    validator = Validator(kind, check, text, {"type": kind})
    holder.append(validator)
    return validator


def _literal(value: Any, *, checked: bool = True) -> Validator:
    if type(value) not in (str, int, float, bool) and isinstance(value, (str, int, float)):
        # A StrEnum or IntEnum member: its plain value, as convert() stores it (bool
        # cannot be subclassed, so an int subclass is never a Boolean).
        value = convert(value)
    if type(value) not in (str, int, float, bool):
        raise TypeError(f"v.literal() takes a str, int, float or bool, got {value!r}")
    if checked and type(value) is int and not MIN_INT64 <= value <= MAX_INT64:
        raise ValidationError(
            f"v.literal({value!r}) is outside the Int64 range "
            f"[{MIN_INT64}, {MAX_INT64}]: no value could ever match it."
        )
    if checked and type(value) is str:
        convert(value, path="v.literal()")  # no Convex string holds a lone surrogate
    if checked and type(value) is float and not math.isfinite(value):
        # Convex's ValidatorJSON holds a float literal as a JSON number (LiteralValidator).
        raise ValidationError(
            f"UnsupportedFloatLiteral: v.literal({value!r}): Infinite or NaN values are not "
            "supported in literal validators. Use v.float64() (and check the value in the "
            "function), or a string literal."
        )
    # Strings as Convex prints them (double quotes, also valid Python source).
    text = (
        f"v.literal({json.dumps(value, ensure_ascii=False) if type(value) is str else repr(value)})"
    )
    holder: list[Validator] = []
    literal_type = type(value)

    def check(candidate: Any, resolver: Resolver | None) -> tuple[str, Any] | None:
        if type(candidate) is literal_type and (
            candidate == value if literal_type is not float else values_equal(candidate, value)
        ):
            return None

        def build(context: str) -> str:
            # Convex appends the path right after the sentence (LiteralValuesDoNotMatch).
            return (
                f"`{format_value(candidate)}` does not match literal validator `{text}`.{context}"
            )

        return "", _Lazy(build)

    validator = Validator("literal", check, text, {"type": "literal", "value": value})
    holder.append(validator)
    return validator


def _id(table: str, *, checked: bool = True) -> Validator:
    if not isinstance(table, str):
        raise TypeError(f"v.id() takes a table name, got {table!r}")
    if checked and (not _IDENTIFIER.match(table) or not table.strip("_")):
        # Convex parses it as a TableName (check_valid_identifier); "_" tables are system ones.
        raise ValidationError(
            f"Invalid table name {table!r} in v.id(): table names are identifiers "
            "([A-Za-z_][A-Za-z0-9_]*, ASCII, at most 64 characters, not all underscores)."
        )
    text = f'v.id("{table}")'
    holder: list[Validator] = []

    def check(value: Any, resolver: Resolver | None) -> tuple[str, Any] | None:
        if type(value) is not str:
            return _mismatch(value, holder[0])
        try:
            number = ids.decode_id(value)[0]
        except InvalidId:
            return _mismatch(value, holder[0])
        if resolver is not None:
            found = resolver(number)
            if found is None:  # Convex reports no table here, only the mismatch
                return _mismatch(value, holder[0])
            if found != table and found.startswith("_"):  # Convex's SystemTableReference
                return "", _Lazy(
                    lambda context: (
                        f'Found ID "{value}" from a system table, which does not '
                        f"match the table name in validator `{text}`.{context}"
                    )
                )
            if found != table:
                return "", _Lazy(
                    lambda context: (
                        f'Found ID "{value}" from table `{found}`, which does not '
                        f"match the table name in validator `{text}`.{context}"
                    )
                )
        return None

    validator = Validator("id", check, text, {"type": "id", "tableName": table})
    holder.append(validator)
    return validator


def _array(item: Validator) -> Validator:
    item = as_validator(item)
    item_check = item._check
    text = f"v.array({item!r})"
    holder: list[Validator] = []

    def check(value: Any, resolver: Resolver | None) -> tuple[str, Any] | None:
        if type(value) is not list:
            return _mismatch(value, holder[0])
        for i, element in enumerate(value):
            failure = item_check(element, resolver)
            if failure is not None:
                return _nest(failure, f"[{i}]")
        return None

    validator = Validator("array", check, text, {"type": "array", "value": item._json})
    holder.append(validator)
    return validator


def _none_for_optional(failure: tuple[str, Any], name: str) -> tuple[str, Any]:
    """``failure`` of an optional field given None, with the Python fix appended.

    In JavaScript, ``undefined`` leaves an optional field out; Python's None is
    Convex's null, a value, so ``{"b": None}`` fails ``v.optional(v.string())``.
    """
    path, inner = failure
    build = inner._build

    def hinted(context: str) -> str:
        return (
            f"{build(context)}\n(None is null, a value: leave the optional field `{name}` "
            "out, or patch it with engine.UNSET to remove it.)"
        )

    return path, _Lazy(hinted, inner._path)


class _FieldTypeError(TypeError):
    """What is no validator, in a field of a dict of validators (``field``: its path)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"Field {field!r}: {reason}")
        self.field = field
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:  # pickles, as every error here does
        return (type(self), (self.field, self.reason))


def _object(fields: Mapping[str, Any]) -> Validator:
    compiled: dict[str, Validator] = {}
    for name, field in fields.items():
        try:
            compiled[name] = as_validator(field)
        except _FieldTypeError as error:  # a nested field: the path grows
            raise _FieldTypeError(f"{name}.{error.field}", error.reason) from None
        except TypeError as error:  # say which field, in a dict of dozens
            raise _FieldTypeError(name, str(error)) from None
    for name in compiled:
        if not isinstance(name, str) or not _IDENTIFIER.match(name) or not name.strip("_"):
            raise ValidationError(
                f"Invalid field name {name!r} in v.object(): field names in validators must be "
                "identifiers ([A-Za-z_][A-Za-z0-9_]*, ASCII, at most 64 characters, not all "
                "underscores), as Convex's IdentifierFieldName requires."
            )
    # Convex checks the fields in sorted order (its ObjectValidator is a BTreeMap): a
    # field's value, or its absence, before the next field; extra fields after all.
    checks = [(name, f._check, not f.is_optional) for name, f in sorted(compiled.items())]
    text = "v.object({" + ", ".join(f'"{k}": {f!r}' for k, f in compiled.items()) + "})"
    allowed = set(compiled)
    holder: list[Validator] = []

    def check(value: Any, resolver: Resolver | None) -> tuple[str, Any] | None:
        if type(value) is not dict:
            return _mismatch(value, holder[0])
        for name, field_check, required in checks:
            if name in value:
                failure = field_check(value[name], resolver)
                if failure is not None:
                    if not required and value[name] is None:
                        failure = _none_for_optional(failure, name)
                    return _nest(failure, _field_segment(name))
            elif required:
                return "", _Lazy(partial(_missing_message, name, value, text))
        if len(value) > len(allowed) or not allowed.issuperset(value):
            extra = min(k for k in value if k not in allowed)
            return "", _Lazy(partial(_extra_message, extra, value, text))
        return None

    json = {
        "type": "object",
        "value": {
            k: {"fieldType": f._json, "optional": f.is_optional} for k, f in compiled.items()
        },
    }
    validator = Validator("object", check, text, json, fields=compiled)
    holder.append(validator)
    return validator


def _only_strings(json: Any) -> bool:
    """Whether validator ``json`` accepts only strings: Convex's ``is_subset(v.string())``
    (``v.string()``, ``v.id(...)``, string literals, and unions of those)."""
    kind = json["type"]
    if kind in ("string", "id"):
        return True
    if kind == "literal":
        return type(json["value"]) is str
    return kind == "union" and all(_only_strings(m) for m in json["value"])


def _has_string_literal(json: Any) -> bool:
    """Convex's ``is_string_subtype_with_string_literal``: a string literal, or a union
    with one anywhere inside."""
    if json["type"] == "literal":
        return type(json["value"]) is str
    return json["type"] == "union" and any(_has_string_literal(m) for m in json["value"])


def _record(keys: Validator, values: Validator, *, checked: bool = True) -> Validator:
    keys, values = as_validator(keys), as_validator(values)
    if checked and (keys.is_optional or values.is_optional):
        raise ValidationError(
            f"Record validator cannot have optional {'keys' if keys.is_optional else 'values'}: "
            f"v.record({keys!r}, {values!r}). A record's fields are all optional already; "
            "use v.union(x, v.null()) for values that may be null."
        )
    # Convex's two InvalidRecordType messages (crates/common/src/schemas/json.rs).
    if checked and not _only_strings(keys._json):
        raise ValidationError(
            "InvalidRecordType: Records can only have string keys. Your validator contains "
            f"a record with key typed as `{keys!r}`, which is not a subtype of `v.string()`. "
            "Use v.string(), v.id(...) or a union of those as the key validator."
        )
    if checked and _has_string_literal(keys._json):
        raise ValidationError(
            f"InvalidRecordType: Records cannot have string literal keys (key validator "
            f"{keys!r}). For a fixed set of keys use v.object with v.optional fields, "
            'e.g. v.object({"a": v.optional(...), "b": v.optional(...)}); for any key, '
            "v.string()."
        )
    key_check, value_check = keys._check, values._check
    text = f"v.record({keys!r}, {values!r})"
    holder: list[Validator] = []

    def check(value: Any, resolver: Resolver | None) -> tuple[str, Any] | None:
        if type(value) is not dict:
            return _mismatch(value, holder[0])
        # As Convex: keys in sorted order, each key then its value; a failure's path
        # says which side failed (".keys()" or ".values()"), not which key.
        for key in sorted(value) if len(value) > 1 else value:
            if type(key) is not str:
                return _mismatch(value, holder[0])
            failure = key_check(key, resolver)
            if failure is not None:
                return _nest(failure, ".keys()")
            failure = value_check(value[key], resolver)
            if failure is not None:
                return _nest(failure, ".values()")
        return None

    validator = Validator(
        "record",
        check,
        text,
        # As convex-js and the backend write it: the values as a field type.
        {
            "type": "record",
            "keys": keys._json,
            "values": {"fieldType": values._json, "optional": False},
        },
    )
    holder.append(validator)
    return validator


def _union(*members: Any) -> Validator:
    compiled = [as_validator(m) for m in members]
    checks = [m._check for m in compiled]
    text = "v.union(" + ", ".join(map(repr, compiled)) + ")"
    holder: list[Validator] = []

    literals = [m._json.get("value") for m in compiled if m.kind == "literal"]
    if len(compiled) == 1:
        # As Convex: a one-member union reports its member's own failure.
        check = checks[0]
    elif len(literals) == len(compiled) and all(type(x) is not float for x in literals):
        # A union of str/int/bool literals (an enum): one set lookup. The type is part
        # of the key because True == 1 in Python but not in Convex.
        allowed = frozenset((type(x), x) for x in literals)

        def check(value: Any, resolver: Resolver | None) -> tuple[str, Any] | None:
            try:
                if (type(value), value) in allowed:
                    return None
            except TypeError:  # unhashable: a list or dict is no literal
                pass
            return _mismatch(value, holder[0])

    else:

        def check(value: Any, resolver: Resolver | None) -> tuple[str, Any] | None:
            for member in checks:
                if member(value, resolver) is None:
                    return None
            return _mismatch(value, holder[0])

    validator = Validator(
        "union", check, text, {"type": "union", "value": [m._json for m in compiled]}
    )
    holder.append(validator)
    return validator


def _optional(spec: Any) -> Validator:
    inner = as_validator(spec)
    if inner.is_optional:  # idempotent, as convex-js's asOptional is
        return inner
    return Validator(
        inner.kind,
        inner._check,
        f"v.optional({inner!r})",
        inner._json,
        is_optional=True,
        fields=inner._fields_map,
    )


class _V:
    """The ``v`` namespace: builders for every Convex validator."""

    def string(self) -> Validator:
        return _STRING

    def number(self) -> Validator:
        """A Float64 (Python ``float``); ``v.float64()`` is the same validator."""
        return _FLOAT

    def float64(self) -> Validator:
        return _FLOAT

    def int64(self) -> Validator:
        """An Int64 (Python ``int``, not ``bool``)."""
        return _INT

    def bigint(self) -> Validator:
        """Deprecated Convex alias of :meth:`int64`."""
        return _INT

    def boolean(self) -> Validator:
        return _BOOL

    def null(self) -> Validator:
        return _NULL

    def bytes(self) -> Validator:
        return _BYTES

    def any(self) -> Validator:
        return _ANY

    def id(self, table: str) -> Validator:
        return _id(table)

    def literal(self, value: Any) -> Validator:
        return _literal(value)

    def array(self, item: Any) -> Validator:
        return _array(item)

    def object(self, fields: Mapping[str, Any]) -> Validator:
        if not isinstance(fields, Mapping):  # else "'list' object has no attribute 'items'"
            raise TypeError(
                f"v.object() takes a dict of field names to validators, got "
                f'{type(fields).__name__} {fields!r}: write v.object({{"name": v.string()}})'
            )
        return _object(fields)

    def record(self, keys: Any, values: Any) -> Validator:
        return _record(keys, values)

    def union(self, *members: Any) -> Validator:
        return _union(*members)

    def optional(self, inner: Any) -> Validator:
        return _optional(inner)

    def nullable(self, inner: Any) -> Validator:
        return _union(inner, _NULL)


_STRING: Validator = Validator(
    "string",
    lambda x, r: None if type(x) is str else _mismatch(x, _STRING),
    "v.string()",
    {"type": "string"},
)
_FLOAT: Validator = Validator(
    "number",
    lambda x, r: None if type(x) is float else _float_mismatch(x),
    "v.float64()",
    {"type": "number"},
)
_INT: Validator = Validator(
    "bigint",
    lambda x, r: None if type(x) is int else _int_mismatch(x),
    "v.int64()",
    {"type": "bigint"},
)
_BOOL: Validator = Validator(
    "boolean",
    lambda x, r: None if type(x) is bool else _mismatch(x, _BOOL),
    "v.boolean()",
    {"type": "boolean"},
)
_NULL: Validator = Validator(
    "null", lambda x, r: None if x is None else _mismatch(x, _NULL), "v.null()", {"type": "null"}
)
_BYTES: Validator = Validator(
    "bytes",
    lambda x, r: None if type(x) is bytes else _mismatch(x, _BYTES),
    "v.bytes()",
    {"type": "bytes"},
)
_ANY: Validator = Validator("any", lambda x, r: None, "v.any()", {"type": "any"})

#: The validator builders: ``v.string()``, ``v.object({...})``, ...
v = _V()


def as_validator(spec: Any) -> Validator:
    """A validator from a validator or a dict of validators (``{...}`` → ``v.object``)."""
    if isinstance(spec, Validator):
        return spec
    if isinstance(spec, Mapping):
        return _object(spec)
    meant = _MEANT.get(spec) if isinstance(spec, (type, str)) else None
    raise TypeError(
        f"Expected a validator (v.string(), v.object({{...}}), ...) or a dict of "
        f"validators, got {spec!r}" + (f": write {meant}" if meant else "")
    )


#: What a Python type or a type's name given where a validator belongs stands for.
_MEANT: dict[Any, str] = {
    str: "v.string()",
    "string": "v.string()",
    int: "v.int64() (an int is a Convex Int64; v.number() takes floats)",
    "int64": "v.int64()",
    float: "v.float64()",
    "number": "v.number()",
    "float64": "v.float64()",
    bool: "v.boolean()",
    "boolean": "v.boolean()",
    bytes: "v.bytes()",
    type(None): "v.null()",
    list: "v.array(<item validator>)",
    dict: "v.object({...}) or v.record(<keys>, <values>)",
}


def validator_from_json(json: Any) -> Validator:
    """Rebuild a validator from its :meth:`Validator.to_json` form."""
    kind = json["type"]
    simple = {
        "string": _STRING,
        "number": _FLOAT,
        "bigint": _INT,
        "boolean": _BOOL,
        "null": _NULL,
        "bytes": _BYTES,
        "any": _ANY,
    }
    if kind in simple:
        return simple[kind]
    # Definition rules added since a schema was stored are not applied again here: a
    # stored schema must stay readable (a folder would otherwise refuse every read).
    if kind == "literal":
        return _literal(json["value"], checked=False)
    if kind == "id":
        return _id(json["tableName"], checked=False)
    if kind == "array":
        return _array(validator_from_json(json["value"]))
    if kind == "record":
        values = json["values"]
        if "fieldType" in values:  # Convex's form; before it, the bare value validator
            values = values["fieldType"]
        return _record(
            validator_from_json(json["keys"]), validator_from_json(values), checked=False
        )
    if kind == "union":
        return _union(*(validator_from_json(m) for m in json["value"]))
    if kind == "object":
        fields = {}
        for name, spec in json["value"].items():
            field = validator_from_json(spec["fieldType"])
            fields[name] = _optional(field) if spec.get("optional") else field
        return _object(fields)
    raise ValueError(f"Unknown validator JSON type {kind!r}")


def _whole_number() -> Validator:
    # Python callers write {"numItems": 10}: accept an int as well as Convex's float.
    return _union(_FLOAT, _INT)


#: The validator of ``paginate()`` options, as Convex's ``paginationOptsValidator``
#: (numbers may be ``int`` or ``float``: Python callers write ``10``, not ``10.0``).
pagination_opts = _object(
    {
        "numItems": _whole_number(),
        "cursor": _union(_STRING, _NULL),
        "endCursor": _optional(_union(_STRING, _NULL)),
        "id": _optional(_whole_number()),
        "maximumRowsRead": _optional(_whole_number()),
        "maximumBytesRead": _optional(_whole_number()),
    }
)
