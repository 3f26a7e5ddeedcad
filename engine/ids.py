"""Document ids in Convex's format: the table number and internal id, checksummed, in base32.

An id's bytes are ``VInt(table number) ‖ internal id (16 bytes) ‖ footer (2
bytes)``: the table number in 7-bit groups, least significant first, each byte
but the last with ``0x80`` set; the footer is the Fletcher-16 checksum (both
sums modulo 256, ``sum2 << 8 | sum1``) of the preceding bytes XOR the version
(0), little-endian. The bytes are written in base32 without padding, 5 bits per
character, most significant bit first, with the lowercase Crockford alphabet
``0123456789abcdefghjkmnpqrstvwxyz``. User tables are numbered from 10001, so
their ids are 20 bytes, 32 characters (tables 1-127 give 31). This follows
``crates/value/src/id_v6.rs`` and ``base32.rs`` of convex-backend.

Stricter than Convex on purpose, so that each id has exactly one spelling
(ids compare as strings): a table-number varint must be minimal, and the
unused low bits of the last character must be zero.

Example::

    >>> encode_id(10001, bytes(16))
    'j5700000000000000000000000001qv0'
    >>> decode_id("j5700000000000000000000000001qv0") == (10001, bytes(16))
    True
"""

from __future__ import annotations

import re
from bisect import bisect_right
from functools import lru_cache
from itertools import accumulate
from typing import Final

from .errors import InvalidId
from .formatting import printable

__all__ = [
    "FIRST_USER_TABLE_NUMBER",
    "MAX_TABLE_NUMBER",
    "RECENT_IDS",
    "decode_id",
    "decode_id_key",
    "encode_id",
    "first_at_or_after",
    "is_id",
    "new_internal_id",
]

#: The number of the first user table; smaller numbers are system tables.
FIRST_USER_TABLE_NUMBER: Final = 10001
#: Table numbers are unsigned 32-bit and never 0.
MAX_TABLE_NUMBER: Final = 2**32 - 1

_ALPHABET: Final = "0123456789abcdefghjkmnpqrstvwxyz"
_DIGITS: Final = {character: value for value, character in enumerate(_ALPHABET)}
_VALID_CHARACTERS: Final = re.compile("[0-9a-hjkmnp-tv-z]*")
# bytes.translate, not str.translate: a 256-byte table is ~8x faster than a dict.
_TO_INT_DIGITS: Final = bytes.maketrans(_ALPHABET.encode(), b"0123456789abcdefghijklmnopqrstuv")
_INTERNAL_ID_LENGTH: Final = 16
_VERSION: Final = 0
_MS_PER_DAY: Final = 86_400_000
# encoded length for 19..23 bytes (1-5 varint bytes + 16 + 2)
_MIN_LENGTH: Final = 31
_MAX_LENGTH: Final = 37
_ALPHABET_RULE: Final = "ids use only 0-9 and the lowercase letters a-z except i, l, o and u"


def new_internal_id(random_bytes: bytes, now_ms: float) -> bytes:
    """A 16-byte internal id: 14 random bytes, then 2 bytes big-endian of days since the epoch.

    ``random_bytes`` supplies the randomness (the first 14 bytes are used;
    the engine passes ``os.urandom(14)``; a test may pass fixed bytes);
    ``now_ms`` is milliseconds since the Unix epoch. As in Convex, the day
    count wraps modulo 65536 (in the year 2149).

    Example::

        >>> new_internal_id(bytes(14), 86_400_000.0)[-2:]
        b'\\x00\\x01'

    Raises :class:`ValueError` if fewer than 14 random bytes are given.
    """
    if len(random_bytes) < 14:
        raise ValueError(f"new_internal_id needs 14 random bytes, got {len(random_bytes)}")
    days = max(0, int(now_ms // _MS_PER_DAY)) & 0xFFFF
    return bytes(random_bytes[:14]) + days.to_bytes(2, "big")


def _fletcher16(data: bytes) -> int:
    # sum1 is the running sum of the bytes and sum2 the sum of the running sums,
    # both modulo 256; reducing once at the end gives the same result.
    return (sum(accumulate(data)) & 0xFF) << 8 | (sum(data) & 0xFF)


@lru_cache(maxsize=1024)  # one entry per table: ids are made for few tables, again and again
def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _spreading(groups: int) -> tuple[tuple[int, int], ...]:
    """The steps that move each of ``groups`` (a power of two) 5-bit groups of an
    integer into a byte of its own: (mask of the groups that move, shift).

    Each step halves the lanes: the upper half of the groups of every lane moves
    up into the upper half of the lane's bits.
    """
    steps = []
    total = width = groups * 8
    while groups > 1:
        low = 5 * (groups // 2)  # bits that stay in the lower half
        upper = ((1 << (5 * groups)) - 1) ^ ((1 << low) - 1)
        mask = sum(upper << lane for lane in range(0, total, width))
        steps.append((mask, width // 2 - low))
        width, groups = width // 2, groups // 2
    return tuple(steps)


# Ids are 31 to 37 characters: those of system tables and of user tables below
# 16384 fit 32 groups.
_SPREAD_32: Final = _spreading(32)
_SPREAD_64: Final = _spreading(64)
_DIGIT_TO_CHARACTER: Final = bytes.maketrans(bytes(range(32)), _ALPHABET.encode())


def _base32(data: bytes) -> str:
    """Base32, most significant bit first, no padding.

    Each 5-bit group is moved into a byte of its own by a few whole-integer
    steps (a table lookup per two characters cost ~1.6x more), then the bytes are
    translated into characters.
    """
    bits = len(data) * 8
    length = (bits + 4) // 5
    number = int.from_bytes(data, "big") << (length * 5 - bits)
    size, steps = (32, _SPREAD_32) if length <= 32 else (64, _SPREAD_64)
    for mask, shift in steps:
        moving = number & mask
        number = number ^ moving | moving << shift
    return number.to_bytes(size, "big")[-length:].translate(_DIGIT_TO_CHARACTER).decode("ascii")


def encode_id(table_number: int, internal_id: bytes) -> str:
    """The id string of a document: table number and 16-byte internal id, base32.

    Cost: a few microseconds. Example::

        >>> len(encode_id(FIRST_USER_TABLE_NUMBER, bytes(16)))
        32

    Raises :class:`ValueError` for a table number outside 1..2**32-1 or an
    internal id that is not 16 bytes.
    """
    if type(table_number) is not int or not 1 <= table_number <= MAX_TABLE_NUMBER:
        raise ValueError(f"table numbers are 1..{MAX_TABLE_NUMBER}, got {table_number!r}")
    if len(internal_id) != _INTERNAL_ID_LENGTH:
        raise ValueError(f"an internal id is 16 bytes, got {len(internal_id)}")
    body = _varint(table_number) + bytes(internal_id)
    footer = _fletcher16(body) ^ _VERSION
    return _base32(body + footer.to_bytes(2, "little"))


def _invalid(value: object, why: str) -> InvalidId:
    if isinstance(value, str):
        shown = printable(value if len(value) <= 64 else value[:61] + "...")
        return InvalidId(f'Invalid ID "{shown}": {why}', value=value)
    return InvalidId(f"Invalid ID {value!r:.64}: {why}", value=value)


#: Ids decoded lately: id string -> ``(table number, internal id, document key)``,
#: the key being the 4-byte big-endian table number then the internal id (the
#: ``documents`` key). Decoding costs about a microsecond and apps read the same
#: ids again and again; read it (``RECENT_IDS.get(id)``) on hot paths, never write
#: it: :func:`decode_id_key` fills it. Bounded: emptied when it reaches
#: ``_RECENT_IDS_MAX`` entries (about 20 MB at most).
RECENT_IDS: Final[dict[str, tuple[int, bytes, bytes]]] = {}
_RECENT_IDS_MAX: Final = 1 << 16


def decode_id(id: object) -> tuple[int, bytes]:
    """The table number and 16-byte internal id inside an id string.

    Cost: a dict lookup for an id decoded lately, about 1 µs otherwise. Example::

        >>> decode_id(encode_id(10001, bytes(16)))[0]
        10001

    Raises :class:`InvalidId` (``Invalid ID "<id>": <rule>``) when ``id`` is
    not a ``str``, has the wrong length, holds a character outside the
    alphabet, has a malformed or zero table number, or fails its checksum.
    """
    found = RECENT_IDS.get(id) if type(id) is str else None
    if found is None:
        found = decode_id_key(id)
    return found[0], found[1]


def decode_id_key(id: object) -> tuple[int, bytes, bytes]:
    """``(table number, internal id, document key)`` of an id string, remembered
    in :data:`RECENT_IDS`. Raises :class:`InvalidId` as :func:`decode_id` does."""
    found = RECENT_IDS.get(id) if type(id) is str else None
    if found is None:
        if type(id) is not str and isinstance(id, str):
            # A str subclass (a StrEnum member, a (str, Enum) one whose str() is its
            # name): the string it holds, as values take it.
            id = str.__str__(id)
        number, internal_id = _decode(id)
        found = (number, internal_id, number.to_bytes(4, "big") + internal_id)
        if len(RECENT_IDS) >= _RECENT_IDS_MAX:
            RECENT_IDS.clear()
        RECENT_IDS[id] = found  # type: ignore[index]
    return found


def _decode(id: object) -> tuple[int, bytes]:
    if type(id) is not str:
        raise _invalid(id, f"an ID is a str, got {type(id).__name__}")
    length = len(id)
    if not _MIN_LENGTH <= length <= _MAX_LENGTH:
        raise _invalid(
            id, f"wrong length {length}: an ID has 31 to 37 characters, 32 for user tables"
        )
    if _VALID_CHARACTERS.fullmatch(id) is None:
        position, character = next((i, c) for i, c in enumerate(id) if c not in _DIGITS)
        raise _invalid(id, f"bad character {character!r} at position {position}: {_ALPHABET_RULE}")
    # int() reads base 32 with the digits 0-9a-v; translate ours to those (all in C).
    number = int(id.encode("ascii").translate(_TO_INT_DIGITS), 32)
    size, spare = divmod(length * 5, 8)
    if (size * 8 + 4) // 5 != length:
        raise _invalid(id, f"wrong length {length}: no byte string encodes to it")
    if number & ((1 << spare) - 1):
        raise _invalid(id, "non-canonical encoding: the last character has stray low bits")
    data = (number >> spare).to_bytes(size, "big")
    table_number, offset = _read_varint(id, data)
    if size - offset != _INTERNAL_ID_LENGTH + 2:
        expected = ((offset + _INTERNAL_ID_LENGTH + 2) * 8 + 4) // 5
        raise _invalid(
            id,
            f"wrong length {length}: an ID of table {table_number} has {expected} characters",
        )
    body = data[:-2]
    if int.from_bytes(data[-2:], "little") != _fletcher16(body) ^ _VERSION:
        raise _invalid(id, "bad checksum: the ID was mistyped, truncated or altered")
    return table_number, data[offset:-2]


def _read_varint(id: str, data: bytes) -> tuple[int, int]:
    number = 0
    for index in range(5):
        byte = data[index]
        number |= (byte & 0x7F) << (7 * index)
        if byte < 0x80:
            if index and byte == 0:
                raise _invalid(id, "bad varint: the table number is not minimally encoded")
            if number == 0:
                raise _invalid(id, "bad varint: the table number is 0")
            if number > MAX_TABLE_NUMBER:
                raise _invalid(id, "bad varint: the table number does not fit in 32 bits")
            return number, index + 1
    raise _invalid(id, "bad varint: the table number is longer than 5 bytes")


def _digits_threshold(text: str, length: int) -> int | None:
    """The least ``N`` such that a ``length``-character string of the alphabet sorts at
    or after ``text`` exactly when its base-32 value is at least ``N``; None when
    every such string sorts before ``text``.

    Python orders ``str`` by code point, which is UTF-8 byte order (Convex's String
    order) for the valid Unicode that values hold.
    """
    number = 0
    for index, character in enumerate(text):
        if index == length:
            # ``text`` goes on past the length: a string equal to its start sorts before it.
            number += 1
            return number if number >> (5 * length) == 0 else None
        digit = _DIGITS.get(character)
        if digit is None:
            # Strings sharing text[:index] sort at or after text from the first digit
            # above this character on; without one, from the next value of text[:index].
            above = bisect_right(_ALPHABET, character)
            if above < 32:
                return (number << 5 | above) << (5 * (length - index - 1))
            number += 1
            return number << (5 * (length - index)) if number >> (5 * index) == 0 else None
        number = number << 5 | digit
    # ``text`` is as long as the strings, or a prefix of some (which sort after it).
    return number << (5 * (length - len(text)))


def first_at_or_after(table_number: int, text: str) -> bytes | None:
    """The internal id of the first id of table ``table_number`` (in string order)
    that sorts at or after ``text``; None when every id of the table sorts before it.

    Ids are strings, so an index range bound on ``_id`` may be any string (Convex
    stores ``_id`` in index keys as a String: ``IndexKey`` in
    crates/common/src/index.rs). A table's ids all have one length and, the table
    number being their common first bytes, sort as their internal ids: the ids at or
    after ``text`` are exactly those whose internal id is at least the result. For an
    id of the table that is its own internal id. Cost: a few big-integer operations
    and one id encoding.

    Example::

        >>> first_at_or_after(10001, "") == bytes(16)   # every id sorts after ""
        True
        >>> first_at_or_after(10001, "~") is None       # "~" sorts after every id
        True
    """
    varint = _varint(table_number)
    size = len(varint) + _INTERNAL_ID_LENGTH + 2
    length = (size * 8 + 4) // 5
    threshold = _digits_threshold(text, length)
    if threshold is None:
        return None
    # The id bytes as an integer, at least the threshold once the id's spare low bits
    # are appended (rounded up); their top bytes are the table number's varint.
    least = -(-threshold >> (length * 5 - size * 8))
    rest_bits = (_INTERNAL_ID_LENGTH + 2) * 8
    table_part = int.from_bytes(varint, "big")
    if least >> rest_bits != table_part:
        return bytes(_INTERNAL_ID_LENGTH) if least >> rest_bits < table_part else None
    # The internal id in the threshold's bytes, or the next one if the checksum
    # footer of that one makes its id sort before text.
    candidate = (least & ((1 << rest_bits) - 1)) >> 16
    if encode_id(table_number, candidate.to_bytes(_INTERNAL_ID_LENGTH, "big")) < text:
        candidate += 1
        if candidate >> (_INTERNAL_ID_LENGTH * 8):
            return None
    return candidate.to_bytes(_INTERNAL_ID_LENGTH, "big")


def is_id(value: object) -> bool:
    """Whether ``value`` is a well-formed id string (any table). Never raises."""
    try:
        decode_id(value)
    except InvalidId:
        return False
    return True
