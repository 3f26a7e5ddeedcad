"""engine.values: the value model's rules and messages, order, equality, size, rendering."""

from __future__ import annotations

import copy
import dataclasses
import datetime
import decimal
import enum
import math
import pickle
import re
import struct
from collections import OrderedDict
from typing import Any

import pytest

from engine import values
from engine.errors import LimitExceeded, ValidationError
from engine.formatting import short_repr
from engine.values import (
    UNSET,
    compare,
    convert,
    convert_document,
    format_value,
    nesting,
    type_name,
    value_size,
    values_equal,
)


def nan_with_bits(bits: int) -> float:
    value: float = struct.unpack(">d", struct.pack(">Q", bits))[0]
    return value


def nested_lists(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


def test_all_is_sorted() -> None:
    assert values.__all__ == sorted(values.__all__)


# -- UNSET ----------------------------------------------------------------------------


def test_unset_is_a_falsy_singleton_named_unset() -> None:
    assert repr(UNSET) == "UNSET"
    assert not UNSET
    assert type(UNSET)() is UNSET
    assert copy.copy(UNSET) is UNSET
    assert copy.deepcopy([UNSET])[0] is UNSET
    assert pickle.loads(pickle.dumps(UNSET)) is UNSET


# -- convert: accepted values -------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [None, True, False, 0, -(2**63), 2**63 - 1, 1.5, math.inf, -math.inf, "", "héllo 😀",
     b"", b"\x00\xff", [], [1, [2.0]], {}, {"a": {"": None, " ~": [b"x"]}}],
)  # fmt: skip
def test_stored_values_come_back_as_the_same_object(value: Any) -> None:
    assert convert(value) is value


def test_special_floats_are_kept_bit_for_bit() -> None:
    for value in (math.nan, -0.0, nan_with_bits(0x7FF0_0000_0000_0001)):
        converted = convert(value)
        assert struct.pack(">d", converted) == struct.pack(">d", value)


def test_tuples_and_byte_buffers_are_normalized_without_touching_the_input() -> None:
    original = {"t": (1, (2, 3)), "b": bytearray(b"\x00"), "m": memoryview(b"ab"), "same": [1]}
    converted = convert(original)
    assert converted == {"t": [1, [2, 3]], "b": b"\x00", "m": b"ab", "same": [1]}
    assert type(converted["b"]) is bytes and type(converted["m"]) is bytes
    assert converted["same"] is original["same"]  # unchanged parts are shared, not copied
    assert original["t"] == (1, (2, 3))  # the input is not modified


def test_a_released_memoryview_is_a_validation_error_with_its_path() -> None:
    released = memoryview(b"ab")
    released.release()
    with pytest.raises(ValidationError) as caught:  # was a bare ValueError from bytes()
        convert({"m": [released]})
    assert caught.value.path == "$.m[0]"
    assert str(caught.value).startswith("memoryview at $.m[0] was released")


def test_a_change_late_in_a_list_keeps_the_earlier_items() -> None:
    assert convert([1, "a", (2,), 3]) == [1, "a", [2], 3]
    assert convert({"a": 1, "b": (2,), "c": 3}) == {"a": 1, "b": [2], "c": 3}


class Color(enum.StrEnum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


def test_subclasses_of_builtin_types_become_the_plain_types() -> None:
    converted = convert({Color.RED: [Color.RED, Level.HIGH], "o": OrderedDict(a=1)})
    assert converted == {"red": ["red", 3], "o": {"a": 1}}
    key = next(iter(converted))
    assert type(key) is str
    assert type(converted["red"][0]) is str and type(converted["red"][1]) is int
    assert type(converted["o"]) is dict


def test_bool_stays_a_boolean_and_never_an_int64() -> None:
    assert convert(True) is True
    assert type_name(True) == "Boolean"
    assert compare(True, 2**62) == 1  # Boolean sorts after Int64 and Float64
    assert not values_equal(True, 1)


# -- convert: rejected values ---------------------------------------------------------


def rejection(value: Any, **kwargs: Any) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        convert(value, **kwargs)
    return caught.value


def test_int_outside_64_bits_is_rejected_with_convex_text() -> None:
    error = rejection({"n": [0, 2**63]})
    assert "9223372036854775808 does not fit into a 64-bit signed integer." in str(error)
    assert error.path == "$.n[1]"
    assert "(at $.n[1])" in str(error)
    error = rejection(-(2**63) - 1)
    assert "-9223372036854775809 does not fit into a 64-bit signed integer." in str(error)


def test_a_huge_int_still_gets_a_message() -> None:
    error = rejection(10**5000)  # str() of it would raise: over 4300 digits
    assert "does not fit into a 64-bit signed integer" in str(error)


def test_lone_surrogate_is_rejected() -> None:
    error = rejection({"s": ["ok", "ab\ud800"]})
    assert error.path == "$.s[1]"
    assert "is not valid Unicode: it contains the lone surrogate '\\ud800' at index 2" in str(error)


@pytest.mark.parametrize(
    ("value", "found", "hint"),
    [
        ({1, 2}, "set {1, 2}", "Convert the set to a list"),
        (frozenset(), "frozenset frozenset()", "Convert the set to a list"),
        (
            datetime.date(2024, 1, 2),
            "date datetime.date(2024, 1, 2)",
            "milliseconds since the epoch",
        ),
        (decimal.Decimal("1.5"), "Decimal Decimal('1.5')", "to a float, or to a str"),
        (object(), "object <object object at", ""),
        (complex(1, 2), "complex (1+2j)", ""),
    ],
)
def test_other_types_are_rejected_naming_what_is_allowed(value: Any, found: str, hint: str) -> None:
    error = rejection({"tags": ["a", "b", value]})
    assert error.path == "$.tags[2]"
    message = str(error)
    assert message.startswith(found)
    assert (
        "is not a Convex value (at $.tags[2]): expected None, bool, int, float, str, bytes, list or dict."
        in message
    )
    assert hint in message


@dataclasses.dataclass
class Point:
    x: int


def test_a_dataclass_gets_a_conversion_hint() -> None:
    assert "dataclasses.asdict" in str(rejection(Point(1)))


def test_unset_in_an_array_or_as_a_value_is_rejected() -> None:
    error = rejection({"a": [UNSET]})  # Convex: [undefined] is an error
    assert error.path == "$.a[0]"
    assert str(error).startswith("UNSET is not a valid Convex value (at $.a[0])")
    assert "patch()" in str(error)
    assert rejection(UNSET).path == "$"


def test_object_fields_set_to_unset_are_left_out() -> None:
    # Convex drops undefined-valued keys of objects (research §1.1), at any depth.
    value = {"a": 1, "b": UNSET, "c": {"d": UNSET, "e": [{"f": UNSET, "g": 2}]}}
    assert convert(value) == {"a": 1, "c": {"e": [{"g": 2}]}}
    assert value["b"] is UNSET  # the caller's dict is not changed
    assert convert({"only": UNSET}) == {}


def test_fields_set_to_unset_count_toward_no_rule() -> None:
    # Convex drops undefined fields before it checks anything (convexToJson): a field
    # that is left out neither counts toward the 1024 fields nor is a reserved name.
    wide = {f"f{i}": 0 for i in range(1024)} | {"gone": UNSET}
    assert len(convert(wide)) == 1024
    assert convert_document({"a": 1, "_gone": UNSET}) == {"a": 1}
    with pytest.raises(LimitExceeded):
        convert(wide | {"gone": 0})


def test_non_str_keys_are_rejected_at_the_object() -> None:
    error = rejection({"meta": {3: "x"}})
    assert error.path == "$.meta"
    assert str(error).startswith("Object keys must be str; found key 3 of type int (at $.meta).")


def test_dollar_field_names_are_reserved() -> None:
    error = rejection({"a": {"$x": 1}})
    assert error.path == '$.a["$x"]'
    assert str(error).startswith("Field name $x starts with a '$', which is reserved.")


@pytest.mark.parametrize(
    ("name", "bad"),
    [("a\x01", "'\\x01'"), ("tab\t", "'\\t'"), ("é", "'é'"), ("del\x7f", "'\\x7f'")],
)
def test_field_names_must_be_printable_ascii(name: str, bad: str) -> None:
    error = rejection({name: 1})
    assert (
        f"has invalid character {bad}: Field names can only contain non-control ASCII characters"
        in str(error)
    )
    assert error.path.startswith("$[")
    if name == "é":  # shown as written, not as a JSON escape
        assert str(error).startswith('Field name "é" has invalid character')


def test_field_name_length_limit_is_1024() -> None:
    assert convert({"x" * 1024: 1}) == {"x" * 1024: 1}
    error = rejection({"x" * 1025: 1})
    assert str(error).startswith("Field name is too long (1025 > maximum 1024)")


def test_any_printable_ascii_name_is_fine_below_the_top_level() -> None:
    value = {"": 1, " ": 2, "a.b": 3, "_x": 4, "~!": 5}
    assert convert(value) is value


def test_paths_use_dots_for_identifiers_and_brackets_otherwise() -> None:
    assert rejection({"a b": [{"c": {1}}]}).path == '$["a b"][0].c'
    assert rejection({"x": {1}}, path="$.args").path == "$.args.x"


def test_array_length_limit() -> None:
    assert len(convert([0] * 8192)) == 8192
    with pytest.raises(LimitExceeded) as caught:
        convert({"list": [0] * 8193})
    assert caught.value.limit == "ArrayTooLong"
    assert caught.value.path == "$.list"
    assert str(caught.value).startswith("Array length is too long (8193 > maximum length 8192)")


def test_object_field_limit() -> None:
    convert({f"f{i}": 0 for i in range(1024)})
    with pytest.raises(LimitExceeded) as caught:
        convert({"wide": {f"f{i}": 0 for i in range(1025)}})
    assert caught.value.limit == "TooManyFields"
    assert caught.value.path == "$.wide"
    assert str(caught.value).startswith("Object has too many fields (1025 > maximum number 1024)")


def test_object_field_limit_counts_only_present_fields() -> None:
    # UNSET fields are left out, so the message counts the fields Convex would see
    # (it said 1030 for 1025 present fields and 5 UNSET ones).
    wide: dict[str, Any] = {f"f{i}": 0 for i in range(1025)} | {f"u{i}": UNSET for i in range(5)}
    with pytest.raises(LimitExceeded) as caught:
        convert(wide)
    assert str(caught.value).startswith("Object has too many fields (1025 > maximum number 1024)")


def test_a_dollar_name_is_reported_as_reserved_before_its_characters() -> None:
    # Convex's check_valid_field_name tests the '$' first, then the characters.
    assert str(rejection({"$é": 1})).startswith("Field name $é starts with a '$'")


def test_values_nest_up_to_64_levels() -> None:
    convert(nested_lists(64))
    with pytest.raises(LimitExceeded) as caught:
        convert(nested_lists(70))
    assert caught.value.limit == "NestingTooDeep"
    assert str(caught.value).startswith(
        "Value is too nested (nested 70 levels deep > maximum nesting 64)"
    )
    assert caught.value.path == "$" + "[0]" * 64


def test_nesting_measure() -> None:
    assert nesting(1) == 0
    assert nesting([]) == 1
    assert nesting({"a": [1, {"b": ()}]}) == 4
    assert nesting(nested_lists(5000)) == 5000  # iterative: no RecursionError


def test_a_value_that_contains_itself_is_refused_not_measured_forever() -> None:
    # A list or dict holding itself nests without end: convert stops at the limit, and
    # the message must not try to measure the infinite depth (it hung, growing a stack).
    looped: list[Any] = [1]
    looped.append(looped)
    with pytest.raises(LimitExceeded) as caught:
        convert({"a": looped})
    assert caught.value.limit == "NestingTooDeep"
    assert "contains itself" in str(caught.value)
    assert caught.value.path == "$.a" + "[1]" * 63
    branching: dict[str, Any] = {}
    branching["x"] = branching
    branching["y"] = [branching, branching]  # each level doubles the paths to walk
    with pytest.raises(LimitExceeded) as caught:
        convert_document({"b": branching})
    assert str(caught.value).startswith("Document is too nested (it contains itself")
    with pytest.raises(ValueError, match="contains itself"):
        nesting(branching)


def test_nesting_of_shared_parts_is_measured_once() -> None:
    shared: list[Any] = [1]
    for _ in range(100):  # 2**100 paths, 101 distinct lists
        shared = [shared, shared]
    assert nesting(shared) == 101
    with pytest.raises(LimitExceeded) as caught:
        convert(shared)
    assert str(caught.value).startswith(
        "Value is too nested (nested 101 levels deep > maximum nesting 64)"
    )


# -- convert_document -------------------------------------------------------------------


def document_rejection(document: Any) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        convert_document(document)
    return caught.value


def test_documents_may_hold_system_fields() -> None:
    document = {"_id": "j5700000000000000000000000001qv0", "_creationTime": 1.5, "a": 1}
    assert convert_document(document) is document


def test_top_level_underscore_fields_are_reserved() -> None:
    error = document_rejection({"ok": 1, "_x": 1})
    assert error.path == "$._x"
    assert str(error).startswith(
        "Field '_x' starts with an underscore, which is only allowed for system fields like '_id'"
    )
    assert convert_document({"a": {"_x": 1}}) == {"a": {"_x": 1}}  # only the top level


def test_system_field_types_are_checked() -> None:
    error = document_rejection({"_id": 5})
    assert error.path == "$._id"
    assert str(error).startswith("The '_id' field 5 must be an Id")
    error = document_rejection({"_creationTime": 5})
    assert error.path == "$._creationTime"
    assert str(error).startswith("The '_creationTime' field should be a float, is 5 ")


def test_a_document_must_be_a_dict() -> None:
    error = document_rejection([1])
    assert error.path == "$"
    assert str(error).startswith("A document must be a dict (a Convex object), got Array [1]")


def test_document_values_follow_the_value_rules() -> None:
    assert document_rejection({"a": {"$b": 1}}).path == '$.a["$b"]'


def test_document_nesting_limit_is_16_counting_the_document() -> None:
    convert_document({"deep": nested_lists(15)})
    with pytest.raises(LimitExceeded) as caught:
        convert_document({"deep": nested_lists(16)})
    assert caught.value.limit == "NestingTooDeep"
    assert str(caught.value).startswith(
        "Document is too nested (nested 17 levels deep > maximum nesting 16)"
    )
    assert caught.value.path == "$.deep" + "[0]" * 15


def test_document_size_limit_is_one_mebibyte_by_convex_formula() -> None:
    # size = 2 (object) + len("s") + 1 + 2 (string) + n
    convert_document({"s": "x" * (1048576 - 6)})
    with pytest.raises(LimitExceeded) as caught:
        convert_document({"s": "x" * 1_100_000})
    assert caught.value.limit == "DocumentTooLarge"
    assert str(caught.value).startswith("Value is too large (1.05 MiB > maximum size 1 MiB)")
    assert "1100006 bytes, over the limit of 1048576" in str(caught.value)
    with pytest.raises(LimitExceeded):
        convert_document({"s": "x" * (1048576 - 5)})


def test_document_size_counts_utf8_bytes() -> None:
    with pytest.raises(LimitExceeded):
        convert_document({"s": "é" * 524_286})  # 2 bytes each: one byte over


# -- value_size -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "size"),
    [(None, 1), (True, 1), (7, 9), (0.5, 9), ("", 2), ("é", 4), (b"abc", 5), ([], 2),
     ([1, None], 12), ({}, 2), ({"ab": 1}, 14)],
)  # fmt: skip
def test_value_size_formula(value: Any, size: int) -> None:
    assert value_size(value) == size


def test_system_fields_size_as_convex_documents() -> None:
    document = {"_id": "j5700000000000000000000000001qv0", "_creationTime": 1.0}
    assert value_size(document) == 2 + 38 + 23


def test_value_size_rejects_unconverted_values() -> None:
    with pytest.raises(TypeError):
        value_size((1,))


# -- compare and values_equal -------------------------------------------------------

ORDERED: list[Any] = [
    UNSET,
    None,
    -(2**63),
    -1,
    0,
    2**63 - 1,
    nan_with_bits(0xFFF8_0000_0000_0000),  # -NaN
    -math.inf,
    -1.0,
    -5e-324,
    -0.0,
    0.0,
    5e-324,
    1.0,
    math.inf,
    math.nan,
    nan_with_bits(0x7FFF_FFFF_FFFF_FFFF),  # NaN with the largest payload
    False,
    True,
    "",
    "\x00",
    "A",
    "a",
    "ab",
    "\uffff",
    "\U00010000",  # after U+FFFF in UTF-8 (before it in UTF-16)
    b"",
    b"\x00",
    b"\xff",
    [],
    [None],
    [0],
    [0, 0],
    [0.0],
    [[]],
    {},
    {"": None},
    {"a": 1},
    {"a": 1, "b": 0},
    {"a": 2},
    {"b": 0},
]


def test_compare_follows_convex_order() -> None:
    for i, a in enumerate(ORDERED):
        for j, b in enumerate(ORDERED):
            assert compare(a, b) == (i > j) - (i < j), (a, b)


def test_cross_type_order_ignores_magnitude() -> None:
    assert compare(1, 0.5) == -1
    assert compare(2**62, -math.inf) == -1
    assert compare(None, UNSET) == 1


def test_objects_compare_by_sorted_keys_not_insertion_order() -> None:
    assert compare({"b": 1, "a": 2}, {"a": 2, "b": 1}) == 0
    assert compare({"b": 0, "a": 1}, {"a": 1, "c": 0}) == -1  # "b" < "c"


def test_compare_refuses_unconverted_values() -> None:
    with pytest.raises(TypeError, match="compare expects converted Convex values"):
        compare((1,), [1])
    with pytest.raises(TypeError):
        compare({1}, {1})


def test_values_equal_is_convex_equality() -> None:
    assert values_equal({"a": [1, b"x"]}, {"a": [1, b"x"]})
    assert not values_equal(1, 1.0)
    assert not values_equal(0.0, -0.0)
    assert values_equal(math.nan, float("nan"))
    assert not values_equal(math.nan, nan_with_bits(0x7FF8_0000_0000_0001))
    assert not values_equal(True, 1)
    assert not values_equal({"a": None}, {"b": None})
    assert not values_equal({"a": 1}, {"a": 1, "b": 2})
    assert not values_equal([1], [1, 2])
    assert values_equal({"a": 1, "b": 2}, {"b": 2, "a": 1})
    assert values_equal(UNSET, UNSET)
    assert not values_equal(UNSET, None)


# -- type_name and format_value ----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "name"),
    [(UNSET, "undefined"), (None, "Null"), (1, "Int64"), (1.0, "Float64"), (False, "Boolean"),
     ("", "String"), (b"", "Bytes"), ([], "Array"), ({}, "Object"), ((), "Array"),
     (bytearray(), "Bytes"),
     (Color.RED, "String"), ({1}, "set")],
)  # fmt: skip
def test_type_names(value: Any, name: str) -> None:
    assert type_name(value) == name


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, "null"), (UNSET, "undefined"), (True, "true"), (123, "123"), (123.0, "123.0"),
     (-0.0, "-0.0"), (math.nan, "NaN"), (math.inf, "inf"), (-math.inf, "-inf"),
     (1e16, "1e16"), (1.5e-5, "1.5e-5"), (-2.5e300, "-2.5e300"), (1e15, "1000000000000000.0"),
     ("a\"b", '"a\\"b"'), ("é", '"é"'), (b"\x00", "b'\\x00'"),
     ({"a": [1, 2.0, "x"]}, '{"a": [1, 2.0, "x"]}'), ([], "[]"), ({}, "{}")],
)  # fmt: skip
def test_format_value(value: Any, text: str) -> None:
    assert format_value(value) == text


def test_messages_show_lone_surrogates_escaped() -> None:
    # Strings that are not valid Unicode may reach a message (a field name, a value
    # shown by format_value): written raw, the message could not be encoded as UTF-8.
    assert format_value("a\ud800") == '"a\\ud800"'
    assert format_value({"k": "\udfff\u00e9"}) == '{"k": "\\udfff\u00e9"}'
    for bad in ({"\ud800": 1}, {"ok": {"x\udc80": 1}}):
        with pytest.raises(ValidationError) as caught:
            convert(bad)
        assert "\\ud" in str(caught.value).encode("utf-8").decode("utf-8")
    with pytest.raises(ValidationError) as caught:
        convert_document({"_\ud800": 1})
    assert str(caught.value).encode("utf-8").startswith(b"Field '_\\ud800' starts with")


def test_format_value_truncates_long_values_cheaply() -> None:
    text = format_value(list(range(8192)))
    assert len(text) == 80 and text.endswith("...")
    assert format_value("x" * 1_000_000, 20) == '"' + "x" * 16 + "..."
    assert format_value(10**5000).startswith("<int of")


def _shared(levels: int) -> Any:
    """A list of 8192 references to a list of 8192 references ... to 8192 floats: a few
    objects in memory, 8192**levels floats for anything that walks it as a tree."""
    value: Any = [1.5] * 8192
    for _ in range(levels - 1):
        value = [value] * 8192
    return value


def test_a_value_sharing_one_list_many_times_is_refused_without_walking_it_all() -> None:
    # Found by the fidelity hunt: a value is a tree to Convex, so one list referred to
    # many times counts in full each time, and convert() walked all of it before any
    # size check: _shared(2) (67 million floats, 604 MB by Convex's measure) was walked
    # for 3.6 s and accepted, _shared(3) ran for hours.
    for levels in (2, 3):
        with pytest.raises(LimitExceeded, match=r"Value is too large \(more than 64 MiB") as big:
            convert(_shared(levels))
        assert big.value.limit == "ValueTooLarge"
    with pytest.raises(LimitExceeded, match=r"the document at \$ measures more than") as doc:
        convert_document({"x": _shared(3)})
    assert doc.value.limit == "DocumentTooLarge"
    # Below the cap nothing changes: 8 MiB of one shared list is converted as before.
    assert len(convert([[1.5] * 8192] * 100)) == 100


def test_the_not_a_value_error_renders_only_the_head_of_a_large_container() -> None:
    # The message shows 40 characters of the value, but repr() rendered all of it
    # first: a set of 8M items took about 1 s to refuse.
    rendered = 0

    class Item:
        def __repr__(self) -> str:
            nonlocal rendered
            rendered += 1
            return "it"

    huge = {frozenset([Item() for _ in range(100_000)])}
    with pytest.raises(ValidationError) as raised:
        convert({"a": huge})
    assert rendered <= 40
    assert str(raised.value).startswith(
        "set {frozenset({it, it, it, it, it, it, i... is not a Convex value (at $.a)"
    )
    # Short values and other types render as repr() does.
    for value, shown in [
        ({1, 2}, "{1, 2}"),
        (set(range(100)), "{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11..."),
        (frozenset({"a"}), "frozenset({'a'})"),
    ]:
        with pytest.raises(ValidationError, match=re.escape(f"{type(value).__name__} {shown} ")):
            convert(value)
    cyclic: list[Any] = [1]
    cyclic.append(cyclic)
    assert short_repr({"a": cyclic}) == "{'a': [1, [...]]}" == repr({"a": cyclic})
