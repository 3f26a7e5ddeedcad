"""engine.ids: Convex's id format, checked against Convex's own vectors and a stdlib reference."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import ids
from engine.errors import InvalidId
from engine.ids import (
    FIRST_USER_TABLE_NUMBER,
    decode_id,
    encode_id,
    is_id,
    new_internal_id,
)

ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_FROM_RFC4648 = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", ALPHABET)


def reference_id(body: bytes) -> str:
    """An id from raw ``VInt ‖ internal id`` bytes, via the stdlib's base32 (RFC 4648)."""
    sum1 = sum2 = 0
    for byte in body:
        sum1 = (sum1 + byte) % 256
        sum2 = (sum2 + sum1) % 256
    data = body + bytes([sum1, sum2])  # footer sum2 << 8 | sum1, little-endian
    return base64.b32encode(data).decode().translate(_FROM_RFC4648).rstrip("=")


def test_all_is_sorted() -> None:
    assert ids.__all__ == sorted(ids.__all__)


def test_convex_stability_vector() -> None:
    # convex-backend crates/value/src/id_v6.rs, test_document_id_stability
    internal = [251]
    for _ in range(15):
        internal.append(internal[-1] * 251 % 256)
    assert encode_id(1017, bytes(internal)) == "z43zp6c3e75gkmz1kfwj6mbbx5sw281h"
    assert decode_id("z43zp6c3e75gkmz1kfwj6mbbx5sw281h") == (1017, bytes(internal))


def test_a_real_convex_id_decodes() -> None:
    # convex-backend crates/value/src/sorting.rs, test_roundtrip_trophies
    table, internal = decode_id("074wwt1x3qmwz35bvscy44eq2yngrt8")
    assert table == 1
    assert len(internal) == 16
    assert encode_id(table, internal) == "074wwt1x3qmwz35bvscy44eq2yngrt8"


def test_hand_computed_vector_for_the_first_user_table() -> None:
    # 10001 = 78 * 128 + 17: VInt bytes 0x91 0x4e; checksum of 0x91 0x4e and 16 zeros:
    # sum1 = 0xdf, sum2 = (0x91 + 0xdf * 17) % 256 = 0x60, footer bytes 0xdf 0x60.
    body = bytes([0x91, 0x4E]) + bytes(16)
    assert reference_id(body) == "j5700000000000000000000000001qv0"
    assert encode_id(FIRST_USER_TABLE_NUMBER, bytes(16)) == "j5700000000000000000000000001qv0"


@pytest.mark.parametrize(
    ("table", "length"),
    [(1, 31), (127, 31), (128, 32), (10001, 32), (2**14 - 1, 32), (2**14, 34), (2**20, 34),
     (2**21, 36), (2**28, 37), (2**31 - 1, 37), (2**32 - 1, 37)],
)  # fmt: skip
def test_round_trip_and_length(table: int, length: int) -> None:
    internal = bytes(range(200, 216))
    id = encode_id(table, internal)
    assert len(id) == length
    assert decode_id(id) == (table, internal)
    assert is_id(id)


@settings(max_examples=200)
@given(st.integers(1, 2**32 - 1), st.binary(min_size=16, max_size=16))
def test_round_trip_matches_the_reference(table: int, internal: bytes) -> None:
    id = encode_id(table, internal)
    varint = bytearray()
    n = table
    while n >= 0x80:
        varint.append(n & 0x7F | 0x80)
        n >>= 7
    varint.append(n)
    assert id == reference_id(bytes(varint) + internal)
    assert decode_id(id) == (table, internal)


def test_user_table_ids_are_32_characters() -> None:
    # two VInt bytes hold 10001..16383; from table 16384 on, ids have 34 characters
    for table in (FIRST_USER_TABLE_NUMBER, 2**14 - 1):
        assert len(encode_id(table, bytes(16))) == 32
    assert len(encode_id(2**14, bytes(16))) == 34


def test_every_single_character_change_is_caught() -> None:
    id = encode_id(FIRST_USER_TABLE_NUMBER, bytes(range(16)))
    for position in range(len(id)):
        for character in ALPHABET:
            if character != id[position]:
                changed = id[:position] + character + id[position + 1 :]
                assert not is_id(changed), changed


def invalid(value: object) -> str:
    with pytest.raises(InvalidId) as caught:
        decode_id(value)
    assert caught.value.value is value
    assert isinstance(caught.value, ValueError)
    return str(caught.value)


@pytest.mark.parametrize(("value", "kind"), [(None, "NoneType"), (123, "int"), (b"j57", "bytes")])
def test_non_strings_are_invalid(value: object, kind: str) -> None:
    assert invalid(value) == f"Invalid ID {value!r}: an ID is a str, got {kind}"


@pytest.mark.parametrize("value", ["", "abc", "0" * 30, "0" * 38, "j" * 1000])
def test_wrong_lengths_are_invalid(value: str) -> None:
    message = invalid(value)
    assert f"wrong length {len(value)}: an ID has 31 to 37 characters" in message
    assert len(message) < 160  # long input is shortened in the message


@pytest.mark.parametrize("length", [33, 35])
def test_lengths_no_bytes_encode_to_are_invalid(length: int) -> None:
    assert (
        invalid("0" * length)
        == f'Invalid ID "{"0" * length}": wrong length {length}: no byte string encodes to it'
    )


@pytest.mark.parametrize(
    ("character", "position"),
    [("i", 31), ("l", 0), ("o", 5), ("u", 9), ("J", 3), (" ", 7), ("٣", 2), ("=", 30)],
)
def test_characters_outside_the_alphabet_are_invalid(character: str, position: int) -> None:
    id = encode_id(FIRST_USER_TABLE_NUMBER, bytes(16))
    bad = id[:position] + character + id[position + 1 :]
    assert invalid(bad) == (
        f'Invalid ID "{bad}": bad character {character!r} at position {position}: ids use only '
        "0-9 and the lowercase letters a-z except i, l, o and u"
    )


def test_a_message_about_a_lone_surrogate_can_be_printed() -> None:
    # The id is shown escaped: a raw lone surrogate made str(error).encode() fail.
    message = invalid("\ud800" * 32)
    assert message.encode("utf-8").startswith(b'Invalid ID "\\ud800\\ud800')


def test_bad_checksum_is_invalid() -> None:
    id = encode_id(FIRST_USER_TABLE_NUMBER, bytes(16))
    bad = id[:10] + ("1" if id[10] != "1" else "2") + id[11:]
    assert (
        invalid(bad)
        == f'Invalid ID "{bad}": bad checksum: the ID was mistyped, truncated or altered'
    )


def test_stray_low_bits_are_invalid() -> None:
    id = encode_id(5, bytes(16))  # 19 bytes: 31 characters, the last holds 3 unused bits
    last = ALPHABET.index(id[-1])
    bad = id[:-1] + ALPHABET[last | 1]
    assert bad != id
    assert invalid(bad).endswith("non-canonical encoding: the last character has stray low bits")


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (bytes([0x00]) + bytes(16), "bad varint: the table number is 0"),
        (bytes([0x81, 0x00]) + bytes(16), "bad varint: the table number is not minimally encoded"),
        (bytes([0xFF, 0xFF, 0xFF, 0xFF, 0x7F]) + bytes(16), "bad varint: the table number does not fit in 32 bits"),
        (bytes([0x80] * 5) + bytes(16), "bad varint: the table number is longer than 5 bytes"),
        (bytes([0x05]) + bytes(17), "wrong length 32: an ID of table 5 has 31 characters"),
        (bytes([0x85, 0x01]) + bytes(15), "wrong length 31: an ID of table 133 has 32 characters"),
    ],
)  # fmt: skip
def test_malformed_table_numbers_are_invalid(body: bytes, why: str) -> None:
    value = reference_id(body)
    assert invalid(value) == f'Invalid ID "{value}": {why}'


def test_is_id_never_raises() -> None:
    assert is_id(encode_id(1, bytes(16)))
    assert not is_id(None)
    assert not is_id("not an id")
    assert not is_id(["j5700000000000000000000000001qv0"])


@pytest.mark.parametrize(
    ("table", "internal"),
    [(0, bytes(16)), (2**32, bytes(16)), (-1, bytes(16)), (True, bytes(16)), (1, bytes(15))],
)
def test_encode_id_rejects_bad_input(table: int, internal: bytes) -> None:
    with pytest.raises(ValueError):
        encode_id(table, internal)


def test_new_internal_id_is_random_bytes_then_days_since_epoch() -> None:
    random = bytes(range(1, 15))
    internal = new_internal_id(random, 19_000 * 86_400_000 + 86_399_999.5)
    assert internal == random + (19_000).to_bytes(2, "big")
    assert new_internal_id(random + b"extra", 0.0) == random + b"\x00\x00"
    assert new_internal_id(random, -5.0)[-2:] == b"\x00\x00"
    with pytest.raises(ValueError, match="needs 14 random bytes, got 13"):
        new_internal_id(bytes(13), 0.0)


def test_decoded_ids_are_remembered_with_their_document_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ids, "_RECENT_IDS_MAX", 4)
    ids.RECENT_IDS.clear()
    made = [encode_id(10001 + n, bytes([n]) * 16) for n in range(10)]
    for n, value in enumerate(made):
        assert decode_id(value) == (10001 + n, bytes([n]) * 16)
        assert ids.RECENT_IDS[value] == (
            10001 + n,
            bytes([n]) * 16,
            (10001 + n).to_bytes(4, "big") + bytes([n]) * 16,
        )
        assert len(ids.RECENT_IDS) <= 4  # bounded: emptied when full
    # A remembered id decodes to the same result; a rejected one is never remembered,
    # so it is rejected again.
    assert decode_id(made[-1]) == (10010, bytes([9]) * 16)
    bad = made[0][:-1] + ("1" if made[0][-1] != "1" else "2")
    for _ in range(2):
        with pytest.raises(InvalidId, match="bad checksum|stray low bits"):
            decode_id(bad)
    assert bad not in ids.RECENT_IDS
    ids.RECENT_IDS.clear()


# -- where a string falls among a table's ids (index ranges on _id) ---------------

TABLES = st.one_of(
    st.sampled_from([1, 127, 128, 10001, 10002, 10129, 2**14 - 1, 2**14, 2**32 - 1]),
    st.integers(1, 2**32 - 1),
)


def test_first_at_or_after_examples() -> None:
    first = encode_id(10001, bytes(16))
    assert ids.first_at_or_after(10001, "") == bytes(16)  # every id sorts after ""
    assert ids.first_at_or_after(10001, first) == bytes(16)  # an id of the table: itself
    assert ids.first_at_or_after(10001, first + "0") == bytes(15) + b"\x01"  # just after it
    assert ids.first_at_or_after(10001, "~") is None  # "~" sorts after every id
    assert ids.first_at_or_after(10001, "j5") == bytes(16)  # a prefix of every id
    assert ids.first_at_or_after(10001, "j6") is None
    # ids of table 10002 sort after those of 10001 ("j97..." > "j57..."); of 10129,
    # before (its id bytes start 0x91 0x4f, 10001's 0x91 0x4e, 10002's 0x92 0x4e)
    assert ids.first_at_or_after(10001, encode_id(10002, bytes(16))) is None
    assert ids.first_at_or_after(10002, encode_id(10129, bytes(16))) == bytes(16)


@settings(max_examples=1000)
@given(st.data())
def test_first_at_or_after_is_the_first_id_not_sorting_before_the_string(
    data: st.DataObject,
) -> None:
    from tests.property.strategies import id_strings

    table = data.draw(TABLES)
    text = data.draw(id_strings(st.one_of(st.just(table), TABLES)))
    found = ids.first_at_or_after(table, text)
    # Python compares str by code point, which is UTF-8 byte order: Convex's String order.
    if found is None:
        assert encode_id(table, b"\xff" * 16) < text
        return
    assert encode_id(table, found) >= text
    number = int.from_bytes(found, "big")
    if number:
        assert encode_id(table, (number - 1).to_bytes(16, "big")) < text
    if is_id(text) and decode_id(text)[0] == table:
        assert found == decode_id(text)[1]
