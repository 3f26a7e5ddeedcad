"""engine.keys: the exact byte layout, decoding errors and range helpers."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest

from engine import keys
from engine.values import UNSET, compare, values_equal

from .test_values import ORDERED


def test_all_is_sorted() -> None:
    assert keys.__all__ == sorted(keys.__all__)


@pytest.mark.parametrize(
    ("value", "key"),
    [
        (UNSET, "01"),
        (None, "03"),
        (0, "08"),
        (1, "0901"),
        (127, "097f"),
        (128, "0a0080"),
        (32767, "0a7fff"),
        (32768, "0b00008000"),
        (2**31 - 1, "0b7fffffff"),
        (2**31, "0c0000000080000000"),
        (2**63 - 1, "0c7fffffffffffffff"),
        (-1, "07ff"),
        (-128, "0780"),
        (-129, "06ff7f"),
        (-32768, "068000"),
        (-32769, "05ffff7fff"),
        (-(2**31), "0580000000"),
        (-(2**31) - 1, "04ffffffff7fffffff"),
        (-(2**63), "048000000000000000"),
        (0.0, "0d8000000000000000"),
        (-0.0, "0d7fffffffffffffff"),
        (1.0, "0dbff0000000000000"),
        (-1.0, "0d400fffffffffffff"),
        (math.inf, "0dfff0000000000000"),
        (math.nan, "0dfff8000000000000"),
        (False, "0e"),
        (True, "0f"),
        ("", "1000"),
        ("ab", "10616200"),
        ("é", "10c3a900"),
        ("a\x00b", "1061010162" + "00"),
        ("\x01", "10010200"),
        (b"", "1100"),
        (b"\x00\x01\xff", "11" + "0101" + "0102" + "ff" + "00"),
        ([], "1200"),
        ([1, "a"], "12" + "0901" + "106100" + "00"),
        ({}, "1500"),
        ({"b": None, "a": 1}, "15" + "6100" + "0901" + "6200" + "03" + "00"),
        ({"": True}, "15" + "01" + "0f" + "00"),
        ({"x": {"": []}}, "15" + "7800" + "15" + "01" + "1200" + "00" + "00"),
    ],
)
def test_layout(value: Any, key: str) -> None:
    assert keys.encode(value).hex() == key
    assert values_equal(keys.decode(bytes.fromhex(key)), value)


def test_negative_floats_flip_every_bit_and_positive_ones_the_sign_bit() -> None:
    for x in (-2.5, 2.5, -math.inf, 5e-324):
        (bits,) = struct.unpack(">Q", struct.pack(">d", x))
        expected = bits ^ (2**64 - 1) if x < 0 else bits | 2**63
        assert keys.encode(x) == b"\x0d" + expected.to_bytes(8, "big")


def test_keys_sort_in_convex_order() -> None:
    encoded = [keys.encode(value) for value in ORDERED]
    assert encoded == sorted(encoded)
    assert len(set(encoded)) == len(encoded)


def test_the_empty_field_name_sorts_between_end_of_object_and_other_names() -> None:
    # With Convex's layout (empty name = bare terminator) [{"": None}] sorts before [{}, 5].
    low, high = [{}, 5], [{"": None}]
    assert compare(low, high) == -1
    assert keys.encode(low) < keys.encode(high)
    assert keys.encode({}) < keys.encode({"": None}) < keys.encode({" ": None})


def test_nul_bytes_keep_keys_prefix_free() -> None:
    # With Convex's 0x00 0xFF escape, the key of "a" is a prefix of the key of "a\x00".
    a, a_nul = keys.encode("a"), keys.encode("a\x00")
    assert a < a_nul
    assert not a_nul.startswith(a)
    end = keys.prefix_end(a)
    assert end is not None
    assert a_nul >= end


def test_encode_many_and_decode_many() -> None:
    parts = ["general", 1724000000000.5, UNSET, None, [1, {"": b"\x00"}]]
    data = keys.encode_many(parts)
    assert data == b"".join(keys.encode(part) for part in parts)
    assert keys.decode_many(data) == parts
    assert keys.decode_many(b"") == []
    assert keys.decode_many(memoryview(data)) == parts


def test_decode_prefix_returns_the_end_offset() -> None:
    data = keys.encode("ab") + keys.encode(7)
    assert keys.decode_prefix(data) == ("ab", 4)
    assert keys.decode_prefix(data, 4) == (7, 6)
    assert keys.decode_prefix(bytearray(data), 4) == (7, 6)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("", "truncated"),
        ("10 61", "truncated"),
        ("0d 00 00", "truncated"),
        ("0c 00", "truncated"),
        ("12 09 01", "truncated"),
        ("15 61 00 09", "truncated"),
        ("15 61", "truncated"),
        ("03 03", "1 trailing bytes"),
        ("02", "byte 0x02 is not a value tag (unknown tag)"),
        ("ff", "byte 0xff is not a value tag (unknown tag)"),
        ("12 01 00", "byte 0x01 is not a value tag (inside an array or object)"),
        ("0a 00 05", "int 5 stored with wrong tag 0xa"),
        ("09 00", "int 0 stored with wrong tag 0x9"),
        ("09 80", "int -128 stored with wrong tag 0x9"),
        ("07 05", "int 5 stored with wrong tag 0x7"),
        ("10 01 03 00", "malformed escape sequence"),
        ("10 01 00", "malformed escape sequence"),
        ("10 ff 00", "not valid UTF-8"),
        ("10 ed a0 80 00", "not valid UTF-8"),  # an encoded surrogate
        ("15 62 00 03 61 00 03 00", "field 'a' is out of order"),
        ("15 61 00 03 61 00 03 00", "field 'a' is out of order"),
        ("15 61 00 03 01 03 00", "field '' is out of order"),
        ("15 24 78 00 03 00", "'$x' is not a valid field name"),
        ("15 0a 00 03 00", "'\\n' is not a valid field name"),
        ("15 c3 a9 00 03 00", "not valid UTF-8"),
    ],
)
def test_malformed_keys_raise_value_error(data: str, message: str) -> None:
    with pytest.raises(ValueError, match="sort key") as caught:
        keys.decode(bytes.fromhex(data))
    assert message in str(caught.value)


@pytest.mark.parametrize("value", [(1,), {1}, [UNSET], {"a": UNSET}, object(), bytearray()])
def test_encode_refuses_unconverted_values(value: Any) -> None:
    with pytest.raises(TypeError, match="run engine.values.convert"):
        keys.encode(value)


def test_encode_refuses_ints_outside_64_bits() -> None:
    with pytest.raises(ValueError, match="does not fit into a 64-bit signed integer"):
        keys.encode(2**63)


def test_prefix_end() -> None:
    assert keys.prefix_end(b"ab") == b"ac"
    assert keys.prefix_end(b"a\xff\xff") == b"b"
    assert keys.prefix_end(b"\x00") == b"\x01"
    assert keys.prefix_end(b"\xff\xff") is None
    assert keys.prefix_end(b"") is None
    key = keys.encode("x")
    end = keys.prefix_end(key)
    assert end is not None
    assert key < key + b"\xff" * 10 < end


def test_key_after() -> None:
    assert keys.key_after(b"ab") == b"ab\x00"
    # nothing fits between a key and its successor
    assert b"ab" < keys.key_after(b"ab") < b"ab\x00\x00" < b"ab\x01"
