"""Search index keys: what a document contributes to a full-text search index.

A search index stores one entry per distinct token of a document's search
field, in the ``indexes`` sub-database beside the other indexes, written in the
same commit as the document (the write set and the committer treat them as any
other index keys)::

    index number (4 B) ‖ sort key of the token (a string)
                       ‖ sort key of each filter field's value, in declared order
                       ‖ sort key of _creationTime
                       ‖ sort key of the token's count in the field (tf, an int)
                       ‖ sort key of the field's token count (its length, an int)
                       ‖ internal id (16 B)

Every part but the id is a sort key (:mod:`engine.keys`), so an entry decodes as
any index key, ends with the internal id as every index key does, and sorts by
token first: the entries of one token are one byte interval, those of every token
starting with ``"hel"`` too (tokens hold no ``0x00`` or ``0x01`` byte, so the
token's UTF-8 bytes are a prefix of its sort key), and within a token the entries
with given values of the first filter fields are one interval again. A search
reads those intervals, and records them in its read set, as an index range read
does. A missing filter field is "missing" (``0x01``), as in other indexes.

A document whose search field is missing or not a string, or has no token,
has no entry (Convex indexes only strings). Example::

    >>> plan = SearchKeyPlan(b"\\x00\\x00\\x00\\x07", "body", ())
    >>> len(plan.keys({"_creationTime": 1.0, "body": "a b a"}, bytes(16)))
    2
"""

from __future__ import annotations

import struct
from collections import Counter
from typing import Any, NamedTuple

from . import keys
from .indexing import field_value, split_path
from .tokenizer import tokenize
from .values import UNSET

__all__ = [
    "FORMAT",
    "SearchEntry",
    "SearchKeyPlan",
    "decode_entry",
    "prefix_range",
    "read_entry",
    "term_range",
]

#: The format version (``meta/format``) of a database whose catalog holds a search
#: index, stored by the schema change that declares the first one; versions that do
#: not know search indexes refuse it (they would write database-index keys into it).
#: 5 (and 6, 5 with vector indexes) was the format of search entries made with Python's
#: ``str.isalnum`` as the tokenizer's "alphanumeric"; 7 is 6 with entries made with
#: Rust's, as Convex (:mod:`engine.tokenizer`): ``Engine.open`` rebuilds the search
#: indexes of a folder of format 5 or 6 (:func:`engine.migration.retokenize`).
FORMAT = b"7"

_MISSING_KEY = keys.encode(UNSET)
_STRING_TAG = b"\x10"


class SearchKeyPlan:
    """How to compute one search index's entries for a document, compiled once.

    Cost of :meth:`keys`: one tokenization of the search field, one sort key per
    filter field, and one key per distinct token.
    """

    __slots__ = ("filter_steps", "prefix", "search_steps")

    def __init__(self, prefix: bytes, search_field: str, filter_fields: tuple[str, ...]) -> None:
        self.prefix = prefix
        self.search_steps = split_path(search_field)
        self.filter_steps = [split_path(f) for f in filter_fields]

    def keys(self, document: dict[str, Any], internal_id: bytes) -> list[bytes]:
        """The entries of ``document`` (none if its search field holds no string)."""
        steps = self.search_steps
        text = document.get(steps[0], UNSET) if len(steps) == 1 else field_value(document, steps)
        if type(text) is not str:
            return []
        tokens = tokenize(text)
        if not tokens:
            return []
        encode = keys.encode
        filters = b""
        for path in self.filter_steps:
            value = field_value(document, path)
            filters += _MISSING_KEY if value is UNSET else encode(value)
        middle = filters + encode(document["_creationTime"])
        tail = encode(len(tokens)) + internal_id
        prefix = self.prefix
        return [
            prefix + encode(token) + middle + encode(count) + tail
            for token, count in Counter(tokens).items()
        ]


class SearchEntry(NamedTuple):
    """One decoded search index entry."""

    token: str
    #: The sort key of each filter field's value, in declared order.
    filters: tuple[bytes, ...]
    creation_time: float
    #: How many times the token occurs in the document's search field.
    frequency: int
    #: How many tokens the document's search field has.
    length: int
    internal_id: bytes


def decode_entry(key: bytes, filter_count: int) -> SearchEntry:
    """Split an entry of a search index with ``filter_count`` filter fields.

    Cost: about 1 µs for the common shapes (scalar filter values, a positive
    ``_creationTime``, counts below 2^31), read in place; other values go through
    :func:`engine.keys.decode_prefix`. Raises :class:`ValueError` for bytes that
    are no such entry.
    """
    if key[4] != _STRING:
        raise ValueError(f"search index entry {key.hex()} does not start with a token")
    end = key.index(0, 5)
    token = key[5:end].decode()
    position = end + 1
    filters = []
    for _ in range(filter_count):
        after = _skip(key, position)
        filters.append(key[position:after])
        position = after
    size = len(key) - 16
    if position + 9 <= size and key[position] == _FLOAT and key[position + 1] & 0x80:
        # A positive float: its key is the tag, then the bytes of its negation.
        creation_time = -_DOUBLE.unpack_from(key, position + 1)[0]
        position += 9
    else:
        creation_time, position = keys.decode_prefix(key[:size], position)
    frequency, position = _small_int(key, position, size)
    length, position = _small_int(key, position, size)
    if (
        position != size
        or type(creation_time) is not float
        or type(frequency) is not int
        or type(length) is not int
        or not 0 < frequency <= length
    ):
        raise ValueError(f"search index entry {key.hex()} is not token, filters, time, counts")
    return SearchEntry(token, tuple(filters), creation_time, frequency, length, key[-16:])


_STRING = 0x10
_FLOAT = 0x0D
_DOUBLE = struct.Struct(">d")
#: Payload widths of the scalar sort keys by tag (strings and bytes end at 0x00).
_WIDTHS = {0x01: 0, 0x03: 0, 0x08: 0, 0x0E: 0, 0x0F: 0, 0x0D: 8}
_WIDTHS.update({tag: 1 << (7 - tag) for tag in range(0x04, 0x08)})
_WIDTHS.update({tag: 1 << (tag - 9) for tag in range(0x09, 0x0D)})


def _skip(key: bytes, position: int) -> int:
    """Where the sort key starting at ``position`` ends (filter values: any value)."""
    tag = key[position]
    width = _WIDTHS.get(tag)
    if width is not None:
        return position + 1 + width
    if tag == _STRING or tag == 0x11:  # escaped: no 0x00 before the terminator
        return key.index(0, position + 1) + 1
    return keys.decode_prefix(key, position)[1]


def _small_int(key: bytes, position: int, size: int) -> tuple[Any, int]:
    """The int whose sort key starts at ``position`` (before ``size``), and its end."""
    tag = key[position] if position < size else -1
    if 0x09 <= tag <= 0x0B:
        end = position + 1 + (1 << (tag - 9))
        if end <= size:
            return int.from_bytes(key[position + 1 : end], "big"), end
    return keys.decode_prefix(key[:size], position)


def read_entry(
    key: bytes, filter_count: int, equalities: list[tuple[int, bytes]]
) -> tuple[bytes, float, int, int] | None:
    """``(internal id, _creationTime, tf, length)`` of entry ``key`` if its filter
    values match every ``(position, sort key)`` of ``equalities``, else None: what a
    search needs of each entry it reads, parsed in place.

    Cost: about 0.7 µs for the common shape (scalar filter values, a positive
    ``_creationTime``, counts below 32,768); anything else goes through
    :func:`decode_entry`. Raises :class:`ValueError` for bytes that are no entry.
    """
    size = len(key) - 16
    position = key.index(0, 5) + 1
    if filter_count:
        if equalities:
            filters = []
            for _ in range(filter_count):
                after = _skip(key, position)
                filters.append(key[position:after])
                position = after
            for at, value in equalities:
                if filters[at] != value:
                    return None
        else:
            for _ in range(filter_count):
                position = _skip(key, position)
    if size - position >= 13 and key[position] == _FLOAT and key[position + 1] & 0x80:
        creation_time = -_DOUBLE.unpack_from(key, position + 1)[0]
        counts = []
        position += 9
        for _ in range(2):
            tag = key[position]
            if tag == 0x09:
                counts.append(key[position + 1])
                position += 2
            elif tag == 0x0A:
                counts.append(int.from_bytes(key[position + 1 : position + 3], "big"))
                position += 3
            else:
                break
        if position == size and len(counts) == 2 and 0 < counts[0] <= counts[1]:
            return key[size:], creation_time, counts[0], counts[1]
    entry = decode_entry(key, filter_count)
    return entry.internal_id, entry.creation_time, entry.frequency, entry.length


def term_range(prefix: bytes, token: str, filters: bytes = b"") -> tuple[bytes, bytes]:
    """The byte interval of the entries of exactly ``token`` whose first filter values
    encode as ``filters`` (the sort keys of the first filter fields' values)."""
    lo = prefix + keys.encode(token) + filters
    return lo, keys.prefix_end(lo) or b"\xff" * 8


def prefix_range(prefix: bytes, start: str) -> tuple[bytes, bytes]:
    """The byte interval of the entries of every token that starts with ``start``."""
    lo = prefix + _STRING_TAG + start.encode()
    return lo, keys.prefix_end(lo) or b"\xff" * 8
