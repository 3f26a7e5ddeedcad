"""Sort keys: the byte encoding of values whose byte order is Convex's value order.

The only module that decides byte order. ``encode(a) < encode(b)`` (as bytes)
exactly when ``compare(a, b) < 0``, and the bytes are equal exactly when
``values_equal(a, b)``; every encoding is self-delimiting and **prefix-free**
(no value's key is a prefix of another value's key), so the keys of several
values can be concatenated into an index key, split again with
:func:`decode_many`, and "every key after ``v``" is the byte interval starting
at ``prefix_end(encode(v))``.

Layout (FoundationDB tuple-layer style, as Convex's ``sorting.rs``)::

    tag   value
    0x01  UNSET (missing field)             no payload
    0x03  None
    0x04  int  -2^63 .. -2^31-1            8 bytes two's complement, big-endian
    0x05  int  -2^31 .. -32769             4 bytes
    0x06  int  -32768 .. -129              2 bytes
    0x07  int  -128 .. -1                  1 byte
    0x08  int  0                           no payload
    0x09  int  1 .. 127                    1 byte
    0x0A  int  128 .. 32767                2 bytes
    0x0B  int  32768 .. 2^31-1             4 bytes
    0x0C  int  2^31 .. 2^63-1              8 bytes
    0x0D  float                            8 bytes big-endian IEEE bits; sign bit set:
                                           all bits flipped, else the sign bit flipped
    0x0E  False        0x0F  True
    0x10  str     escaped UTF-8, then 0x00
    0x11  bytes   escaped bytes, then 0x00
    0x12  list    each item's key, then 0x00
    0x15  dict    per field in sorted name order: the name's bytes then 0x00 (the
                  empty name: the single byte 0x01), then the value's key; then 0x00

Escaping replaces ``0x01`` by ``0x01 0x02`` and ``0x00`` by ``0x01 0x01``, so an
escaped string never contains ``0x00`` and its terminator ends it.

Deviations from Convex's layout, both needed for order and round trip:

- Convex escapes ``0x00`` as ``0x00 0xFF``. Then ``encode("a")`` is a prefix of
  ``encode("a\\x00")``, so ``prefix_end(encode("a"))`` would skip ``"a\\x00"``
  although it sorts after ``"a"``. Our escape keeps every key prefix-free.
  Strings and bytes without ``0x00``/``0x01`` (almost all) encode as in Convex.
- Convex writes the empty field name as an empty escaped string, a lone
  ``0x00``, which is also the end-of-object byte: ``{"": None}`` decodes
  wrongly and ``[{"": None}]`` sorts before ``[{}, 5]`` although ``{}`` sorts
  first. We write the empty name as ``0x01``, which sorts after the end byte
  and before every non-empty name (field names are ASCII ``0x20``-``0x7E``).

Example::

    >>> encode(1), encode("a"), encode([None])
    (b'\\t\\x01', b'\\x10a\\x00', b'\\x12\\x03\\x00')
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any, Final

from .values import UNSET, Value

__all__ = [
    "decode",
    "decode_many",
    "decode_prefix",
    "encode",
    "encode_many",
    "key_after",
    "prefix_end",
]

_UNDEFINED: Final = 0x01
_NULL: Final = 0x03
_ZERO: Final = 0x08
_FLOAT: Final = 0x0D
_FALSE: Final = 0x0E
_TRUE: Final = 0x0F
_STRING: Final = 0x10
_BYTES: Final = 0x11
_ARRAY: Final = 0x12
_OBJECT: Final = 0x15
_END: Final = 0x00
_EMPTY_FIELD: Final = 0x01

_TAG_INT8 = struct.Struct(">Bb")
_TAG_INT16 = struct.Struct(">Bh")
_TAG_INT32 = struct.Struct(">Bi")
_TAG_INT64 = struct.Struct(">Bq")
_TAG_BITS = struct.Struct(">BQ")
_TAG_DOUBLE = struct.Struct(">Bd")
_DOUBLE = struct.Struct(">d")
_BITS = struct.Struct(">Q")
_SIGN: Final = 1 << 63
_ALL_BITS: Final = (1 << 64) - 1

_UNSET_KEY: Final = b"\x01"
_NULL_KEY: Final = b"\x03"
_FALSE_KEY: Final = b"\x0e"
_TRUE_KEY: Final = b"\x0f"
# Keys of -128..127, the most common ints (counts, flags, small enums).
_SMALL_INTS: Final = tuple(
    b"\x08" if n == 0 else _TAG_INT8.pack(0x07 if n < 0 else 0x09, n) for n in range(-128, 128)
)


def _escape(data: bytes) -> bytes:
    if 0 in data or 1 in data:  # int membership is a memchr; bytes membership is much slower
        return data.replace(b"\x01", b"\x01\x02").replace(b"\x00", b"\x01\x01")
    return data


def _int_key(n: int) -> bytes:
    if -128 <= n <= 127:
        return _SMALL_INTS[n + 128]
    if -32768 <= n <= 32767:
        return _TAG_INT16.pack(0x06 if n < 0 else 0x0A, n)
    if -2147483648 <= n <= 2147483647:
        return _TAG_INT32.pack(0x05 if n < 0 else 0x0B, n)
    if -(2**63) <= n < 2**63:
        return _TAG_INT64.pack(0x04 if n < 0 else 0x0C, n)
    raise ValueError(f"{n} does not fit into a 64-bit signed integer (sort keys hold Int64)")


def _float_key(x: float) -> bytes:
    if x > 0.0:
        # Positive: only the sign bit flips, and -x is exactly x with the sign bit set.
        return _TAG_DOUBLE.pack(_FLOAT, -x)
    bits: int = _BITS.unpack(_DOUBLE.pack(x))[0]
    return _TAG_BITS.pack(_FLOAT, bits ^ _ALL_BITS if bits & _SIGN else bits | _SIGN)


def encode(value: Value) -> bytes:
    """The sort key of one converted value (see the module docstring for the layout).

    ``UNSET`` encodes as "missing" (``0x01``), before ``None``. Cost: one pass
    over the value; a scalar is one or two C calls.

    Example::

        >>> encode(UNSET) < encode(None) < encode(-1) < encode(0.5) < encode(False)
        True

    Raises :class:`TypeError` for a value not in stored form (run
    :func:`engine.values.convert` first) and :class:`ValueError` for an
    ``int`` outside 64 bits.
    """
    t = type(value)
    if t is str:
        data: bytes = value.encode()
        if 0 in data or 1 in data:
            data = _escape(data)
        return b"\x10" + data + b"\x00"
    if t is float:
        return _float_key(value)
    if t is int:
        return _int_key(value)
    if t is bool:
        return _TRUE_KEY if value else _FALSE_KEY
    if value is None:
        return _NULL_KEY
    if value is UNSET:
        return _UNSET_KEY
    if t is bytes:
        return b"\x11" + _escape(value) + b"\x00"
    out = bytearray()
    _encode_into(value, out)
    return bytes(out)


def _encode_into(value: Any, out: bytearray) -> None:
    t = type(value)
    if t is list:
        out.append(_ARRAY)
        for item in value:
            _encode_into(item, out)
        out.append(_END)
    elif t is dict:
        out.append(_OBJECT)
        for name in sorted(value):
            if name:
                out += name.encode()  # field names are printable ASCII: nothing to escape
                out.append(_END)
            else:
                out.append(_EMPTY_FIELD)
            _encode_into(value[name], out)
        out.append(_END)
    elif value is UNSET or t not in _SCALAR_TYPES:
        raise TypeError(
            f"sort keys encode converted Convex values only, found {type(value).__name__} "
            f"{value!r:.40}; run engine.values.convert() on the value first"
        )
    else:
        out += encode(value)


_SCALAR_TYPES: Final = frozenset({str, float, int, bool, type(None), bytes})


def encode_many(values: Iterable[Value]) -> bytes:
    """The concatenated sort keys of ``values``, e.g. an index key's field part.

    Byte order of two such concatenations of equally many values is the
    lexicographic order of the value tuples. Cost: one :func:`encode` each.
    """
    out = b""
    for value in values:  # index keys have few parts: this beats join() on a generator
        out += encode(value)
    return out


def decode(data: bytes | bytearray | memoryview) -> Value:
    """The value whose sort key is ``data``; inverse of :func:`encode`.

    Raises :class:`ValueError` if ``data`` is not exactly one well-formed key
    (truncated, trailing bytes, unknown tag, non-canonical int width or escape,
    invalid UTF-8, unsorted or invalid field names).
    """
    value, end = decode_prefix(data)
    if end != len(data):
        raise ValueError(
            f"sort key has {len(data) - end} trailing bytes after the value ending at offset "
            f"{end}; use decode_many() for concatenated keys"
        )
    return value


def decode_prefix(data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[Value, int]:
    """Decode the one key starting at ``offset``; returns the value and its end offset.

    Cost: proportional to the key's length. Raises :class:`ValueError` for a
    malformed key (see :func:`decode`).
    """
    buf = bytes(data)
    try:
        return _decode(buf, offset, True)
    except IndexError:
        raise ValueError(f"sort key is truncated (started at offset {offset})") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"sort key holds a string that is not valid UTF-8: {error}") from None


def decode_many(data: bytes | bytearray | memoryview) -> list[Value]:
    """Split a concatenation of sort keys (:func:`encode_many`) into its values."""
    buf = bytes(data)
    values = []
    offset = 0
    while offset < len(buf):
        value, offset = decode_prefix(buf, offset)
        values.append(value)
    return values


def _decode(buf: bytes, pos: int, top: bool) -> tuple[Any, int]:
    tag = buf[pos]
    pos += 1
    if tag == _STRING:
        raw, pos = _read_escaped(buf, pos)
        return raw.decode("utf-8"), pos
    if tag == _FLOAT:
        if pos + 8 > len(buf):
            raise IndexError
        bits: int = _BITS.unpack_from(buf, pos)[0]
        bits = bits ^ _SIGN if bits & _SIGN else bits ^ _ALL_BITS
        return _DOUBLE.unpack(_BITS.pack(bits))[0], pos + 8
    if 0x04 <= tag <= 0x0C:
        if tag == _ZERO:
            return 0, pos
        width = 1 << (7 - tag) if tag < _ZERO else 1 << (tag - 9)
        if pos + width > len(buf):
            raise IndexError
        n = int.from_bytes(buf[pos : pos + width], "big", signed=True)
        if _int_key(n)[0] != tag:
            raise ValueError(
                f"sort key at offset {pos - 1}: int {n} stored with wrong tag {tag:#x}"
            )
        return n, pos + width
    if tag == _NULL:
        return None, pos
    if tag in (_FALSE, _TRUE):
        return tag == _TRUE, pos
    if tag == _BYTES:
        return _read_escaped(buf, pos)
    if tag == _ARRAY:
        items = []
        while buf[pos] != _END:
            item, pos = _decode(buf, pos, False)
            items.append(item)
        return items, pos + 1
    if tag == _OBJECT:
        return _decode_object(buf, pos)
    if tag == _UNDEFINED and top:
        return UNSET, pos
    where = "inside an array or object" if tag == _UNDEFINED else "unknown tag"
    raise ValueError(f"sort key at offset {pos - 1}: byte {tag:#04x} is not a value tag ({where})")


def _decode_object(buf: bytes, pos: int) -> tuple[dict[str, Any], int]:
    fields: dict[str, Any] = {}
    previous: str | None = None
    while buf[pos] != _END:
        if buf[pos] == _EMPTY_FIELD:
            name, pos = "", pos + 1
        else:
            end = buf.find(b"\x00", pos)
            if end < 0:
                raise IndexError
            name = buf[pos:end].decode("ascii")
            if not name.isprintable() or name[0] == "$" or len(name) > 1024:
                raise ValueError(f"sort key at offset {pos}: {name!r} is not a valid field name")
            pos = end + 1
        if previous is not None and name <= previous:
            raise ValueError(f"sort key at offset {pos}: field {name!r} is out of order")
        previous = name
        fields[name], pos = _decode(buf, pos, False)
    return fields, pos + 1


def _read_escaped(buf: bytes, pos: int) -> tuple[bytes, int]:
    end = buf.find(b"\x00", pos)
    if end < 0:
        raise IndexError
    raw = buf[pos:end]
    if b"\x01" in raw:
        data = raw.replace(b"\x01\x01", b"\x00").replace(b"\x01\x02", b"\x01")
        if _escape(data) != raw:
            raise ValueError(f"sort key at offset {pos}: malformed escape sequence")
        return data, end + 1
    return raw, end + 1


def prefix_end(key: bytes) -> bytes | None:
    """The smallest byte string greater than every string that starts with ``key``.

    With prefix-free keys, ``[encode(v), prefix_end(encode(v)))`` holds exactly
    the index keys whose next value is ``v``, and ``prefix_end(encode(v))``
    starts "after ``v``". ``None`` when no such string exists (``key`` is
    empty or all ``0xFF``). Cost: one pass over trailing ``0xFF`` bytes.

    Example::

        >>> prefix_end(b"ab\\xff")
        b'ac'
    """
    stripped = key.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + _NEXT_BYTE[stripped[-1]]


#: ``bytes((b + 1,))`` for each byte value below 0xFF, made once: building a
#: one-byte string per call cost more than the rest of :func:`prefix_end`.
_NEXT_BYTE = [bytes((b + 1,)) for b in range(255)]


def key_after(key: bytes) -> bytes:
    """The immediate successor of exactly ``key``: ``key + b"\\x00"``.

    Use it to turn an inclusive bound into an exclusive one (or the reverse)
    for that one key; unlike :func:`prefix_end` it excludes longer keys.
    """
    return key + b"\x00"
